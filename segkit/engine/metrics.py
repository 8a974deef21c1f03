"""Segmentation metrics over one dataset-level confusion matrix (rows truth, columns prediction).

Every metric here holds the same state, so a `MetricCollection` of them updates one matrix per batch
(a compute group). The update is one pass over the pixels: torchmetrics' multiclass metrics validate
their inputs with `torch.unique` and drop ignored pixels by boolean indexing (copies), work that shows in
the training step of a small model (docs/benchmarks.md). The readers already check that mask values are
classes or `ignore_index`, so this update does not repeat it.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric


class ConfusionMatrix(Metric):
    """Pixel counts per (true class, predicted class); pixels whose truth is `ignore_index` are not
    counted. A truth value that is neither a class nor `ignore_index` makes `compute` raise."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("invalid", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """`preds`: predicted class ids (the argmax of the logits), `target`: true ids, same shape."""
        if preds.shape != target.shape:
            raise ValueError(f"preds {list(preds.shape)} and target {list(target.shape)} must have the same shape")
        cells = self.num_classes**2
        # Bin 0: ignored pixels; 1..cells: the matrix, row-major; cells + 1: truth outside the classes.
        bins = torch.where(target == self.ignore_index, 0, target.long() * self.num_classes + preds.long() + 1)
        bins = bins.clamp_(0, cells + 1).flatten()
        if bins.is_cuda:  # CUDA's bincount reads its maximum back to the host: a sync every step
            counts = torch.zeros(cells + 2, dtype=torch.long, device=bins.device)
            counts.index_add_(0, bins, torch.ones_like(bins))
        else:
            counts = torch.bincount(bins, minlength=cells + 2)
        self.confmat += counts[1 : cells + 1].view(self.num_classes, self.num_classes)
        self.invalid += counts[cells + 1]

    def compute(self) -> torch.Tensor:
        if self.invalid > 0:
            raise ValueError(f"{int(self.invalid)} pixels have a true label outside the classes "
                             f"0..{self.num_classes - 1} that is not ignore_index={self.ignore_index}")
        return self.confmat


def iou_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """Per class: true positives over the union of truth and prediction (0 for a class seen in neither)."""
    true_positives = confmat.diag().float()
    unions = confmat.sum(dim=0) + confmat.sum(dim=1) - true_positives
    return true_positives / unions.clamp(min=1)


class IoUPerClass(ConfusionMatrix):
    def compute(self) -> torch.Tensor:
        return iou_per_class(super().compute())


class MeanIoU(ConfusionMatrix):
    """Macro mean of the per-class IoU over the classes present in truth or prediction (as torchmetrics'
    `MulticlassJaccardIndex(average="macro")`); a class equal to `ignore_index` is left out."""

    def compute(self) -> torch.Tensor:
        confmat = super().compute()
        present = (confmat.sum(dim=0) + confmat.sum(dim=1)) > 0
        if 0 <= self.ignore_index < self.num_classes:
            present[self.ignore_index] = False
        return iou_per_class(confmat)[present].mean()


class PixelAccuracy(ConfusionMatrix):
    """Correct pixels over counted pixels."""

    def compute(self) -> torch.Tensor:
        confmat = super().compute()
        return confmat.diag().sum() / confmat.sum().clamp(min=1)


def split_metrics(results: dict[str, float], class_names: list[str], stage: str, split: str | None = None
                  ) -> dict[str, Any]:
    """Lightning's `<stage>/...` results named after the split they measure (default: the stage's name):
    `<split>/miou`, `/acc`, `/loss` (and `/micro_iou` when configured), and the IoU of each class gathered
    in `<split>/iou_per_class`."""
    split = split or stage
    per_class_keys = {f"{stage}/iou_{name}": name for name in class_names}
    totals = {f"{split}/{key.removeprefix(f'{stage}/')}": value for key, value in results.items()
              if key not in per_class_keys}
    return {**totals, f"{split}/iou_per_class": {name: results[key] for key, name in per_class_keys.items()}}


def format_metrics(metrics: dict[str, Any], split: str) -> str:
    """One line: mIoU, pixel accuracy, micro IoU when present and the IoU of every class."""
    per_class = ", ".join(f"{name} {iou:.3f}" for name, iou in metrics[f"{split}/iou_per_class"].items())
    micro = f"   {split}/micro_iou {metrics[f'{split}/micro_iou']:.4f}" if f"{split}/micro_iou" in metrics else ""
    accuracy = f"{split}/acc {metrics[f'{split}/acc']:.4f}"
    return f"{split}/miou {metrics[f'{split}/miou']:.4f}   {accuracy}{micro}   IoU: {per_class}"
