"""The hand-written PyTorch training loop of the article's notebooks: the yardstick of segkit's overhead.

    python benchmarks/plain_loop.py [model=...] [bench.image_size=[H,W]] [bench.batch_size=N] [...]

No Lightning, no metrics, no logging: per batch, forward, loss, zero_grad, backward, optimizer step.
`segkit.bench` runs `train_images_per_s` in the same process as its `Trainer.fit`, on the same network,
tensors, loss and optimizer, alternating the two, and divides segkit's images/s by this loop's. Run as
a script, it prints this loop's images/s for the bench config (the same overrides as `segkit.bench`).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work, so that a clock reading means finished steps."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_images_per_s(
    net: nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    warmup: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Trains on every batch of `loader` and returns the images per second of the steps after the first
    `warmup`, timed from the end of the last warm-up step to the end of the last step."""
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 step (the clock starts when the last warm-up step ends), got {warmup}")
    net.train()
    start, images = None, 0
    for step, (inputs, masks) in enumerate(loader):
        inputs, masks = inputs.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = criterion(net(inputs), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == warmup - 1:
            synchronize(device)
            start = time.perf_counter()
        elif step >= warmup:
            images += len(inputs)
    if not images:
        raise ValueError(f"the loader has no batch after the {warmup} warm-up steps")
    synchronize(device)
    return images / (time.perf_counter() - start)


def main(overrides: list[str]) -> None:
    from segkit.bench import bench_config, resolve_device, row_config, training_parts

    cfg = bench_config(overrides)
    if cfg.bench.threads:
        torch.set_num_threads(cfg.bench.threads)
    device = resolve_device(cfg.bench.device)
    parts = training_parts(row_config(cfg, cfg.model.name, "default", device), device)
    rates = []
    for _ in range(cfg.bench.repeats):
        optimizer = parts.module.configure_optimizers()["optimizer"]  # the optimizer config, completed
        rates.append(train_images_per_s(parts.module.net, parts.module.criterion, optimizer, parts.loader,
                                        cfg.bench.warmup, parts.device, parts.autocast_dtype))
    print(f"plain loop: {cfg.model.name} {statistics.median(rates):.2f} training images/s "
          f"(batch {cfg.bench.batch_size}, {'x'.join(map(str, cfg.bench.image_size))}, {parts.device}, "
          f"median of {cfg.bench.repeats}: {', '.join(f'{rate:.2f}' for rate in rates)})")


if __name__ == "__main__":
    main(sys.argv[1:])
