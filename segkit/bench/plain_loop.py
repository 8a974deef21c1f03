"""The hand-written PyTorch training loop of the article's notebooks: the yardstick of segkit's overhead
(`python benchmarks/plain_loop.py` runs it alone).

No Lightning, no metrics, no logging: per batch, forward, loss, zero_grad, backward, optimizer step
(`train_step`). `segkit.bench` takes these steps in the same process as its `Trainer.fit`, on a copy of
the same network, the same batches, loss and optimizer config, one plain step after each Trainer step,
and divides segkit's images/s by this loop's.
"""

from __future__ import annotations

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


def random_batch_step(model: str, size: int, batch: int) -> Callable[[], None]:
    """A training step (forward, cross-entropy, zero_grad, backward, Adam) of the model config `model`, 3 classes,
    seeded, channels_last, on one random batch of `batch` size x size images: for benchmarks that time one step
    under settings they switch around it (benchmarks/allocator.py, benchmarks/unpool_layout.py)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from segkit.config import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"model={model}", "data.num_classes=3"])
    torch.manual_seed(0)
    net = instantiate(cfg.model).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, 3, (batch, size, size))

    def step() -> None:
        loss = nn.functional.cross_entropy(net(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step
