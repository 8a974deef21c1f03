"""The hand-written PyTorch training loop of the article's notebooks: the yardstick of segkit's overhead.

    python benchmarks/plain_loop.py [model=...] [bench.image_size=[H,W]] [bench.batch_size=N] [...]

No Lightning, no metrics, no logging: per batch, forward, loss, zero_grad, backward, optimizer step
(`train_step`). `segkit.bench` takes these steps in the same process as its `Trainer.fit`, on a copy of
the same network, the same batches, loss and optimizer config, one plain step after each Trainer step,
and divides segkit's images/s by this loop's. Run as a script, it prints this loop's images/s for the
bench config (the same overrides as `segkit.bench`).
"""

from __future__ import annotations

import itertools
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


def train_step(
    net: nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    masks: torch.Tensor,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One step of the notebooks' loop; returns the loss."""
    inputs, masks = inputs.to(device, non_blocking=True), masks.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = criterion(net(inputs), masks)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def train_step_seconds(
    net: nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    warmup: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> list[float]:
    """The loop: a `train_step` on every batch of `loader`. Returns the seconds of each step after the
    first `warmup`, each from the end of the step before (device synchronised) to its own end."""
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 step (the clock starts when the last warm-up step ends), got {warmup}")
    net.train()
    seconds, last_end = [], None
    for step, (inputs, masks) in enumerate(loader):
        train_step(net, criterion, optimizer, inputs, masks, device, autocast_dtype)
        if step >= warmup - 1:
            synchronize(device)
            end = time.perf_counter()
            if step >= warmup:
                seconds.append(end - last_end)
            last_end = end
    if not seconds:
        raise ValueError(f"the loader has no batch after the {warmup} warm-up steps")
    return seconds


def images_per_s(batch_size: int, step_seconds: list[float]) -> float:
    return batch_size * len(step_seconds) / sum(step_seconds)


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
        batches = itertools.islice(parts.loader, cfg.bench.warmup + cfg.bench.steps)
        rates.append(images_per_s(cfg.bench.batch_size, train_step_seconds(
            parts.module.net, parts.module.criterion, optimizer, batches, cfg.bench.warmup, parts.device,
            parts.autocast_dtype)))
    print(f"plain loop: {cfg.model.name} {statistics.median(rates):.2f} training images/s "
          f"(batch {cfg.bench.batch_size}, {'x'.join(map(str, cfg.bench.image_size))}, {parts.device}, "
          f"median of {cfg.bench.repeats}: {', '.join(f'{rate:.2f}' for rate in rates)})")


if __name__ == "__main__":
    main(sys.argv[1:])
