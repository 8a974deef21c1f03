"""`Predictor`: a trained checkpoint's network with its training's preprocessing, optional test-time augmentation
and sliding windows, H x W x 3 images in, class ids at each image's own size out (what `segkit predict` runs for a
checkpoint). Images are read as segkit's datasets read them (EXIF orientation, grayscale, palette and RGBA to RGB).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F

from segkit.data import SegmentationDataModule
from segkit.engine.loading import load_module, training_datamodule
from segkit.engine.module import SegmentationModule
from segkit.runtime.tta import TestTimeAugmentation, build_tta

log = logging.getLogger(__name__)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Offsets of windows along one side: every `stride`, the last one flush with the end."""
    if size <= window:
        return [0]
    return [*range(0, size - window, stride), size - window]


def training_resize(data_config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(height, width) that a training data config resizes every training image to (an albumentations `Resize`
    among its `train_transforms`), or None when it trains at the images' own scale or on crops of them."""
    for transform in data_config.get("train_transforms") or ():
        if str(transform.get("_target_", "")).rsplit(".", 1)[-1] == "Resize":
            return int(transform["height"]), int(transform["width"])
    return None


class Predictor:
    """A trained module with the preprocessing of its training: H x W x 3 uint8 RGB images in, class
    probabilities or ids at the image's own size out.

    By default each image is resized to `image_size` (the training size) and the logits are resized back
    bilinearly. `sliding_window=True` predicts at the image's own scale instead, in windows of
    `image_size` overlapping by `window_overlap`, averaging the logits where windows overlap (images
    smaller than a window are padded). `tta="flip"` averages the softmax of the image and of its
    horizontal mirror; `tta_scales` (e.g. [0.75, 1.0]) the softmax of the image resized to each multiple of
    `image_size`, and of each one's mirror with `tta="flip"`.
    """

    def __init__(
        self,
        module: SegmentationModule,
        data: SegmentationDataModule,
        image_size: Sequence[int] | None = None,
        tta: str | None = None,
        tta_scales: Sequence[float] | None = None,
        sliding_window: bool = False,
        window_overlap: float = 0.5,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        image_size = image_size or data.image_size
        if image_size is None:
            raise ValueError(f"{type(data).__name__} has no image_size to predict at; set image_size=[height,width]")
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be [height, width], got {list(image_size)}")
        tta_views = build_tta(tta, tta_scales)
        if sliding_window and tta_views is not None and tta_views.scales != (1.0,):
            raise ValueError(f"tta_scales={list(tta_views.scales)} with sliding_window=true: windows see each image at "
                             f"its own scale; use one or the other")
        if not 0 <= window_overlap < 1:
            raise ValueError(f"window_overlap must be in [0, 1), a fraction of the window, got {window_overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.module = module.to(device).fold_batchnorm()
        self.device = torch.device(device)
        self.num_classes = module.hparams.num_classes
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.tta = tta_views
        self.sliding_window = sliding_window
        self.strides = tuple(max(1, round(side * (1 - window_overlap))) for side in self.image_size)
        self.batch_size = batch_size
        # The data's own pipelines, so normalisation (and resizing, cv2 bilinear) are those of training; one per
        # size the network is fed at.
        scales = tta_views.scales if tta_views else (1.0,)
        self.resize_and_normalise = {size: data.pipeline([A.Resize(*size)])
                                     for size in {TestTimeAugmentation.size(self.image_size, scale) for scale in scales}}
        self.normalise = data.pipeline([])
        self.colormap = data.colormap
        self.class_names = module.class_names

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, trusted_targets: Sequence[str] = (), **options) -> Predictor:
        """The predictor of a checkpoint, with its training's datamodule (normalisation, palette, image
        size); `options` are those of `Predictor`. Only targets of segkit's and `trusted_targets` are built."""
        module = load_module(ckpt_path, trusted_targets)
        resized_to = training_resize(module.segkit_config["data"])
        if options.get("sliding_window") and resized_to:
            log.warning(
                "sliding_window=true: %s was trained on whole images resized to %dx%d (an albumentations Resize in "
                "data.train_transforms), so windows of that size at each image's own scale show it objects at scales "
                "it never saw, with seams where windows meet, for several times the time. Sliding windows suit "
                "models trained on crops of large images (RandomCrop) and evaluated at full resolution; for this "
                "model leave sliding_window=false (docs/eval.md)", ckpt_path, *resized_to)
        return cls(module, training_datamodule(module), **options)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(images.to(self.device)).float()

    def logits(self, image: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
        """C x H x W logits of `image` at its own size (H x W), the network fed it resized to `size` (one of
        the TTA's sizes; default `image_size`), without test-time augmentation."""
        height, width = image.shape[:2]
        if self.sliding_window:
            return self._sliding_window_logits(self.normalise(image=image)["image"])
        logits = self._forward(self.resize_and_normalise[size or self.image_size](image=image)["image"][None])
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits[0]

    def _sliding_window_logits(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        window_height, window_width = self.image_size
        # Padding with 0 (the mean colour once normalised), as validation batches are padded.
        padded = F.pad(image, (0, max(window_width - width, 0), 0, max(window_height - height, 0)))
        boxes = [(top, left) for top in window_starts(padded.shape[1], window_height, self.strides[0])
                 for left in window_starts(padded.shape[2], window_width, self.strides[1])]
        total = torch.zeros(self.num_classes, *padded.shape[1:], device=self.device)
        covered = torch.zeros(1, *padded.shape[1:], device=self.device)
        for first in range(0, len(boxes), self.batch_size):
            batch = boxes[first : first + self.batch_size]
            windows = torch.stack([padded[:, top : top + window_height, left : left + window_width]
                                   for top, left in batch])
            for (top, left), window_logits in zip(batch, self._forward(windows)):
                total[:, top : top + window_height, left : left + window_width] += window_logits
                covered[:, top : top + window_height, left : left + window_width] += 1
        return (total / covered)[:, :height, :width]

    def probabilities(self, image: np.ndarray) -> torch.Tensor:
        """C x H x W class probabilities of `image`, averaged over the test-time augmentation's views."""
        if self.tta is None:
            return self.logits(image).softmax(dim=0)
        return self.tta.mean(partial(self._view_probabilities, image), self.image_size)

    def _view_probabilities(self, image: np.ndarray, size: tuple[int, int], mirrored: bool) -> torch.Tensor:
        if not mirrored:
            return self.logits(image, size).softmax(dim=0)
        return self.logits(np.ascontiguousarray(image[:, ::-1]), size).softmax(dim=0).flip(-1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """H x W uint8 class ids of `image`."""
        return self.probabilities(image).argmax(dim=0).to(torch.uint8).cpu().numpy()
