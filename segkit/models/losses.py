"""The training loss: cross-entropy over the labelled pixels, with optional class weights (given, or computed
from the training masks), label smoothing, a soft Dice term and a Lovasz-softmax term.

    loss.class_weights=median_frequency loss.dice_weight=0.5 loss.lovasz_weight=0.5 loss.label_smoothing=0.05
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segkit.utilities.checks import ConfigError, require_positive

# How `loss.class_weights` may be computed from the training masks, besides a list of numbers.
CLASS_WEIGHTINGS = ("median_frequency", "inverse_sqrt_frequency")


def check_class_weights(weights: Any, num_classes: int | None, key: str = "loss.class_weights",
                        classes_key: str = "num_classes") -> None:
    """Raises a `ConfigError` naming `key` unless `weights` is None, one of `CLASS_WEIGHTINGS`, or one finite
    weight > 0 per class (`num_classes`, the setting `classes_key`; None: any number of classes)."""
    if weights is None:
        return
    if isinstance(weights, str):
        if weights not in CLASS_WEIGHTINGS:
            raise ConfigError(f"{key}={weights!r}: expected a list of numbers, null or one of {list(CLASS_WEIGHTINGS)}")
        return
    if num_classes is not None and len(weights) != num_classes:
        raise ConfigError(f"{key} has {len(weights)} values {list(weights)} for {classes_key}={num_classes}: expected "
                          "one weight per class")
    for index, weight in enumerate(weights):
        require_positive(f"{key}[{index}]", weight)


class SegmentationLoss(nn.CrossEntropyLoss):
    """torch's cross-entropy averaged over the labelled pixels (weighted by class, as torch's mean is), plus
    `dice_weight` times a soft Dice loss and `lovasz_weight` times the Lovasz-softmax loss.

    The cross-entropy is 0 for a batch whose pixels are all `ignore_index`, where torch's mean is 0 / 0 = NaN:
    a crop of a border region is a valid batch, not a diverged run. The Dice term (1 - soft Dice, averaged over
    the classes labelled in the batch, as segmentation_models_pytorch's DiceLoss does) optimises overlap
    directly, so thin or rare classes (Pets' border) count as much as large ones; the Lovasz term is a convex
    surrogate of each class's IoU, the metric itself. Written here because torch and torchmetrics have no
    differentiable Dice or Lovasz loss with an ignore index, and smp would be a dependency for two functions.
    """

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = 255, label_smoothing: float = 0.0,
                 dice_weight: float = 0.0, lovasz_weight: float = 0.0) -> None:
        for name, value in (("dice_weight", dice_weight), ("lovasz_weight", lovasz_weight)):
            if value < 0:
                raise ValueError(f"loss.{name}={value}: expected a weight >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing={label_smoothing}: expected a value in [0, 1)")
        super().__init__(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
        self.dice_weight = dice_weight
        self.lovasz_weight = lovasz_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = target != self.ignore_index
        loss = self.cross_entropy(logits, target, labelled)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, labelled)
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_softmax_loss(logits, target, labelled)
        return loss

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        total = F.cross_entropy(logits, target, self.weight, ignore_index=self.ignore_index, reduction="sum",
                                label_smoothing=self.label_smoothing)
        if self.weight is None:
            return total / labelled.sum().clamp(min=1)
        pixel_weights = self.weight[target.where(labelled, 0)] * labelled
        return total / pixel_weights.sum().clamp(min=torch.finfo(pixel_weights.dtype).tiny)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - the soft Dice of the softmax probabilities and the one-hot target over the labelled pixels, averaged
    over the classes present in the batch's labels; 0 when no pixel is labelled."""
    num_classes = logits.shape[1]
    probabilities = logits.float().softmax(dim=1) * labelled.unsqueeze(1)
    one_hot = F.one_hot(target.where(labelled, 0), num_classes).permute(0, 3, 1, 2) * labelled.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    cardinality = probabilities.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + eps) / (cardinality + eps)
    present = one_hot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0  # keeps the graph: every pixel is ignored
    return (1 - dice)[present].mean()


def lovasz_softmax_loss(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """The Lovasz-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018) over the batch's labelled pixels:
    per class present in the labels, the Lovasz extension of 1 - IoU at the errors |[y = c] - p_c|, sorted in
    decreasing order; averaged over those classes. 0 when no pixel is labelled."""
    num_classes = logits.shape[1]
    probabilities = logits.float().softmax(dim=1).movedim(1, -1)[labelled]  # labelled pixels x classes
    classes = target[labelled]
    losses = []
    for c in range(num_classes):
        foreground = (classes == c).float()
        if not foreground.any():
            continue
        errors, order = (foreground - probabilities[:, c]).abs().sort(descending=True)
        foreground = foreground[order]
        # The gradient of the Lovasz extension: the increments of 1 - IoU as the sorted pixels are taken in turn.
        intersection = foreground.sum() - foreground.cumsum(0)
        union = foreground.sum() + (1 - foreground).cumsum(0)
        jaccard = 1 - intersection / union
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(errors @ jaccard)
    if not losses:
        return logits.sum() * 0.0  # keeps the graph: every pixel is ignored
    return torch.stack(losses).mean()


def count_class_pixels(masks: Iterable[np.ndarray], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the number of its pixels over all `masks` and the pixels of the masks it appears in (other
    values, such as the ignore index, are left out of both)."""
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        counts = np.bincount(mask.ravel(), minlength=256)[:num_classes].astype(np.int64)
        class_pixels += counts
        image_pixels += (counts > 0) * counts.sum()
    return class_pixels, image_pixels


def class_weights_from_counts(method: str, class_pixels: Sequence[int], image_pixels: Sequence[int],
                              class_names: Sequence[str]) -> list[float]:
    """Class weights from pixel counts (`count_class_pixels`).

    median_frequency: SegNet's median frequency balancing (Eigen and Fergus): a class's frequency is its pixels
    over the pixels of the images it appears in, its weight the median frequency over its own.
    inverse_sqrt_frequency: the median frequency over the class's, square-rooted: a milder balance.
    """
    if not isinstance(method, str):
        raise ConfigError(f"loss.class_weights={method!r}: expected one of {list(CLASS_WEIGHTINGS)}")
    check_class_weights(method, len(class_names))
    class_pixels, image_pixels = np.asarray(class_pixels, dtype=np.float64), np.asarray(image_pixels, np.float64)
    absent = [name for name, pixels in zip(class_names, class_pixels) if pixels == 0]
    if absent:
        raise ValueError(f"loss.class_weights={method}: the training masks have no pixel of class(es) {absent}, "
                         "so no weight can be computed for them; give loss.class_weights as a list instead")
    frequency = class_pixels / image_pixels
    weights = np.median(frequency) / frequency
    if method == "inverse_sqrt_frequency":
        weights = np.sqrt(weights)
    return [round(float(w), 4) for w in weights]
