"""Reading every sample of a dataset once (`python -m segkit.data_check`): per split the number of samples, the
share of labelled pixels per class and every problem found, each message naming its file."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from segkit.data.files import FileDataModule, SegmentationFiles
from segkit.runtime.images import DataError

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
