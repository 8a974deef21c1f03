"""python -m segkit.data_check: reads every sample of a dataset once, before a long run is spent on it.

    python -m segkit.data_check data=pets data.root=../shared/data
    python -m segkit.data_check data=voc_aug data.root=~/datasets data.num_workers=2

Prints per split the number of samples, the share of labelled pixels per class and every problem found
(each message names its file), writes the same as data_check.json in the run folder, and exits with
status 1 when there were problems.
"""

from __future__ import annotations

import gc
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from segkit.bench import loader_images_per_s, plain_loop, synthetic_loader
from segkit.config import CONFIG_DIR
from segkit.data.files import FileDataModule, SegmentationFiles
from segkit.image_files import DataError
from segkit.train import build

SPLITS = ("train", "val")


class _SampleScan(Dataset):
    """Per sample: its id, its mask's pixel count per value (None if unreadable) and its problem (or None): an
    unreadable file, or a mask with no pixel of any of the `num_classes` classes."""

    def __init__(self, reader: SegmentationFiles, num_classes: int) -> None:
        self.reader = reader
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray | None, str | None]:
        sample = self.reader.samples[index]
        try:
            _, mask = self.reader.load(index)
        except DataError as error:
            return sample.sample_id, None, str(error)
        counts = np.bincount(mask.ravel(), minlength=256)
        if counts[: self.num_classes].sum() == 0:
            values = np.flatnonzero(counts).tolist()
            return sample.sample_id, counts, (f"{sample.mask}: mask has no labelled pixel (only values {values}), so "
                                              "the sample adds nothing to the loss or the metrics")
        return sample.sample_id, counts, None


def _as_read(item: tuple[str, np.ndarray | None, str | None]) -> tuple[str, np.ndarray | None, str | None]:
    return item


def check_split(reader: SegmentationFiles, class_names: tuple[str, ...], ignore_index: int,
                num_workers: int = 0) -> dict[str, Any]:
    pixels = np.zeros(256, dtype=np.int64)
    problems = []
    # batch_size=None: one sample at a time; the collate function leaves numpy arrays as they are.
    loader = DataLoader(_SampleScan(reader, len(class_names)), batch_size=None, num_workers=num_workers,
                        collate_fn=_as_read)
    for sample_id, counts, problem in loader:
        if problem is not None:
            problems.append({"sample": sample_id, "problem": problem})
        if counts is not None:
            pixels += counts
    labelled = int(sum(pixels[i] for i in range(len(class_names))))
    return {
        "samples": len(reader),
        "pixels": {name: int(pixels[i]) for i, name in enumerate(class_names)},
        "ignored_pixels": int(pixels[ignore_index]),
        "frequencies": {name: float(pixels[i] / labelled) if labelled else 0.0 for i, name in enumerate(class_names)},
        "problems": problems,
    }


def check_dataset(datamodule: FileDataModule, num_workers: int = 0) -> dict[str, dict[str, Any]]:
    """Per split ("train", "val"): samples, pixel counts and frequencies per class, and problems."""
    report = {}
    for split in SPLITS:
        try:
            reader = datamodule.build_split(split)
        except DataError as error:
            report[split] = {"samples": 0, "pixels": {}, "ignored_pixels": 0, "frequencies": {},
                             "problems": [{"sample": None, "problem": str(error)}]}
            continue
        report[split] = check_split(reader, datamodule.class_names, datamodule.ignore_index, num_workers)
    return report


def format_report(report: dict[str, dict[str, Any]]) -> str:
    lines = []
    for split, result in report.items():
        lines.append(f"{split}: {result['samples']} samples, {len(result['problems'])} problems")
        for name, frequency in result["frequencies"].items():
            lines.append(f"  {name:<14} {frequency:7.2%}  ({result['pixels'][name]:,} pixels)")
        if result["samples"]:
            lines.append(f"  {'(ignored)':<14} {result['ignored_pixels']:,} pixels")
        lines.extend(f"  problem: {problem['problem']}" for problem in result["problems"])
    return "\n".join(lines)


def measure_throughput(cfg: DictConfig, batches: int = 20, warmup: int = 3) -> dict[str, float]:
    """Images per second of the train loader alone (real files, real augmentations, the configured
    workers) and of the model's training steps (forward, loss, backward, optimizer step, in the plain
    loop of benchmarks/plain_loop.py) on batches of the same size, in this process: loading starves
    training when the first is below the second."""
    run = build(cfg)  # the training build: same data pipeline, model, optimizer and normalisation
    run.datamodule.setup("fit")
    loader_rate = loader_images_per_s(run.datamodule.train_dataloader(), batches, warmup)
    gc.collect()  # the loader's workers end with it, before training is timed beside them

    module = run.module
    steps = max(3, batches // 4)
    device = torch.device("cpu")
    training_batches = itertools.islice(synthetic_loader(run.datamodule.batch_size, list(cfg.data.image_size),
                                                         cfg.data.num_classes, device, module.memory_format),
                                        warmup + steps)
    train_rate = plain_loop.images_per_s(run.datamodule.batch_size, plain_loop.train_step_seconds(
        module.net, module.criterion, module.configure_optimizers()["optimizer"], training_batches, warmup, device))
    return {"loader_images_per_s": loader_rate, "train_images_per_s": train_rate,
            "batch_size": run.datamodule.batch_size, "num_workers": run.datamodule.num_workers,
            "torch_threads": torch.get_num_threads()}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="data_check")
def main(cfg: DictConfig) -> None:
    if cfg.throughput:
        rates = measure_throughput(cfg, cfg.throughput_batches)
        print(f"train loader {rates['loader_images_per_s']:.1f} images/s ({rates['num_workers']} workers) against "
              f"training {rates['train_images_per_s']:.1f} images/s (batch {rates['batch_size']}): loading is "
              f"{rates['loader_images_per_s'] / rates['train_images_per_s']:.1f}x the training speed")
        (Path(cfg.paths.output_dir) / "throughput.json").write_text(json.dumps(rates, indent=2) + "\n")
        return
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, FileDataModule):
        sys.exit(f"data={type(datamodule).__name__} is generated, not read from files: nothing to check")
    datamodule.prepare_data()
    report = check_dataset(datamodule, num_workers=datamodule.num_workers)
    print(format_report(report))
    report_path = Path(cfg.paths.output_dir) / "data_check.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {report_path}")
    if any(result["problems"] for result in report.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
