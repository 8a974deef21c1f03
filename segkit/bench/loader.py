"""Batches for timing: the configured data's train loader alone (`measure_loader`, shared by `segkit.bench` and
`segkit.data_check throughput=true`), seeded synthetic batches, and the loader against the training steps."""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, IterableDataset

from segkit.bench import plain_loop
from segkit.data import SegmentationDataModule
from segkit.tasks.train import build

# Two distinct batches, so consecutive steps see different tensors, as from a real loader.
SYNTHETIC_BATCHES = 2

class CyclingBatches(IterableDataset):
    """`batches` over and over, without end: with `batch_size=None`, a DataLoader over it adds no
    collation or copy, so both loops time their training steps, not the data."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.cycle(self.batches)


def synthetic_loader(batch_size: int, image_size: list[int], num_classes: int, device: torch.device,
                     memory_format: torch.memory_format = torch.contiguous_format, seed: int = 0) -> DataLoader:
    """Seeded random images (N x 3 x H x W, standard normal: normalised pixels) and masks, already on
    `device` in the network's memory format, batch after batch without end (take what you need)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(SYNTHETIC_BATCHES):
        images = torch.randn(batch_size, 3, *image_size, generator=generator)
        masks = torch.randint(0, num_classes, (batch_size, *image_size), generator=generator)
        batches.append((images.to(device, memory_format=memory_format), masks.to(device)))
    return DataLoader(CyclingBatches(batches), batch_size=None)


def _endless(loader: DataLoader) -> Iterator[Any]:
    """Batches of epoch after epoch (a small split has fewer batches than a measurement needs)."""
    while True:
        yield from loader


def loader_images_per_s(dataloader: DataLoader, batches: int, warmup: int) -> float:
    """Images per second of `dataloader` alone over `batches` batches, after `warmup` (worker start-up is
    not throughput); its workers are stopped before returning."""
    loader = _endless(dataloader)
    for _ in range(warmup):
        next(loader)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(loader)[0])
    rate = images / (time.perf_counter() - start)
    loader.close()  # ends the epoch's iterator and, unless persistent, its workers
    return rate


def measure_loader(datamodule: SegmentationDataModule, batches: int, warmup: int) -> dict[str, Any]:
    """A datamodule's train loader alone: real reading, augmentation and workers, in images/s."""
    datamodule.setup("fit")
    rate = loader_images_per_s(datamodule.train_dataloader(), batches, warmup)
    gc.collect()  # persistent workers end with their loader, before anything is timed beside them
    return {"data": type(datamodule).__name__, "images_per_s": rate, "batch_size": datamodule.batch_size,
            "image_size": None if datamodule.image_size is None else list(datamodule.image_size),
            "num_workers": datamodule.num_workers,
            "pin_memory": datamodule.pin_memory, "persistent_workers": datamodule.persistent_workers,
            "batches": batches}


def measure_throughput(cfg: DictConfig, batches: int = 20, warmup: int = 3) -> dict[str, float]:
    """Images per second of the train loader alone (`measure_loader`: real files, real augmentations, the
    configured workers) and of the model's training steps (forward, loss, backward, optimizer step, in the
    plain loop) on batches of the same size, in this process: loading starves training when the first is
    below the second."""
    run = build(cfg)  # the training build: same data pipeline, model, optimizer and normalisation
    loader = measure_loader(run.datamodule, batches, warmup)
    module = run.module
    steps = max(3, batches // 4)
    device = torch.device("cpu")
    training_batches = itertools.islice(synthetic_loader(run.datamodule.batch_size, list(cfg.data.image_size),
                                                         cfg.data.num_classes, device, module.memory_format),
                                        warmup + steps)
    train_rate = plain_loop.images_per_s(run.datamodule.batch_size, plain_loop.train_step_seconds(
        module.net, module.criterion, module.configure_optimizers()["optimizer"], training_batches, warmup, device))
    return {"loader_images_per_s": loader["images_per_s"], "train_images_per_s": train_rate,
            "batch_size": loader["batch_size"], "num_workers": loader["num_workers"],
            "torch_threads": torch.get_num_threads()}
