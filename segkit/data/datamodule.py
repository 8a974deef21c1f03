"""The segkit LightningDataModule family.

A dataset reader returns (image, mask) as numpy arrays: H x W x 3 uint8 and H x W class ids. Everything
after that (augmentation, normalisation, tensors) happens here, once, through albumentations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from segkit.data.shapes import SHAPES_CLASS_NAMES, ShapesDataset
from segkit.models.encoders.base import IMAGENET_MEAN, IMAGENET_STD


class TransformedDataset(Dataset):
    """Applies an albumentations pipeline to a reader's (image, mask) pairs and returns tensors."""

    def __init__(self, samples: Dataset, pipeline: A.Compose) -> None:
        self.samples = samples
        self.pipeline = pipeline
        self._pipeline_seed: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Albumentations keeps its own RNG, which forked DataLoader workers would all copy and so
        # repeat one another's augmentations. Seed it from torch's seed of this process instead:
        # distinct per worker and epoch, and reproducible under `seed_everything`.
        seed = torch.initial_seed() % 2**32
        if seed != self._pipeline_seed:
            self.pipeline.set_random_seed(seed)
            self._pipeline_seed = seed
        image, mask = self.samples[index]
        out = self.pipeline(image=image, mask=mask)
        return out["image"], out["mask"].long()


class PadCollate:
    """Batches images of different sizes: pads each, at the bottom and right, to the batch's largest
    height and width rounded up to a multiple of `size_divisor` (the network's total stride).

    Images are padded with 0, the mean colour once normalised; masks with `ignore_index`, so the loss
    and the metrics never count padding.
    """

    def __init__(self, size_divisor: int = 32, ignore_index: int = 255) -> None:
        if size_divisor < 1:
            raise ValueError(f"data.size_divisor must be >= 1, got {size_divisor}")
        self.size_divisor = size_divisor
        self.ignore_index = ignore_index

    def __call__(self, batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        height = self._round_up(max(image.shape[-2] for image, _ in batch))
        width = self._round_up(max(image.shape[-1] for image, _ in batch))

        def pad(tensor: torch.Tensor, value: float) -> torch.Tensor:
            return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]), value=value)

        images = torch.stack([pad(image, 0.0) for image, _ in batch])
        masks = torch.stack([pad(mask, self.ignore_index) for _, mask in batch])
        return images, masks

    def _round_up(self, size: int) -> int:
        return math.ceil(size / self.size_divisor) * self.size_divisor


class SegmentationDataModule(L.LightningDataModule):
    """Shared loaders and pipelines; a subclass names its classes and builds each split's reader."""

    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        ignore_index: int = 255,
        train_transforms: Sequence[A.BasicTransform] = (),
        val_transforms: Sequence[A.BasicTransform] = (),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        size_divisor: int = 32,
    ) -> None:
        super().__init__()
        if num_classes != len(self.class_names):
            raise ValueError(
                f"data.num_classes={num_classes} disagrees with {type(self).__name__}, which has "
                f"{len(self.class_names)} classes: {list(self.class_names)}"
            )
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.ignore_index = ignore_index
        self.train_transforms = list(train_transforms)
        self.val_transforms = list(val_transforms)
        # None until set: `segkit.train.build` then takes the model's (ImageNet statistics for
        # pretrained encoders), so the normalisation travels with the weights.
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        # Validation reads whole images of any size; training recipes crop or resize to one size.
        self.val_collate = PadCollate(size_divisor, ignore_index)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @classmethod
    def config_class_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The classes of the datamodule that `config` (its data config) builds, known before building it."""
        return cls.class_names

    @property
    def skipped(self) -> dict[str, int]:
        """Bad samples skipped so far per split; only file datasets with on_bad_sample=skip have any."""
        return {}

    def pipeline(self, transforms: Sequence[A.BasicTransform]) -> A.Compose:
        """`transforms`, then normalisation and conversion to tensors."""
        mean, std = self.mean or IMAGENET_MEAN, self.std or IMAGENET_STD
        return A.Compose([*transforms, A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])

    def build_split(self, split: str) -> Dataset:
        """The reader of `split` ("train" or "val"): a Dataset of (image, mask) numpy pairs."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        # Safe to call twice: readers are built once.
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = TransformedDataset(self.build_split("train"), self.pipeline(self.train_transforms))
        if self.val_set is None:
            self.val_set = TransformedDataset(self.build_split("val"), self.pipeline(self.val_transforms))

    def _loader(self, dataset: Dataset, shuffle: bool, collate_fn: PadCollate | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, collate_fn=self.val_collate)


class ShapesDataModule(SegmentationDataModule):
    """Built-in synthetic data with Pets' three trimap classes; see `segkit.data.shapes`."""

    class_names = SHAPES_CLASS_NAMES

    def __init__(
        self,
        num_train: int = 1500,
        num_val: int = 200,
        image_size: Sequence[int] = (48, 48),
        seed: int = 0,
        border_width: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = tuple(image_size)
        self.split_sizes = {"train": num_train, "val": num_val}
        self.seed = seed
        self.border_width = border_width

    def build_split(self, split: str) -> Dataset:
        # Different seeds per split so validation images are never training images.
        split_seed = self.seed * 2 + (split == "val")
        return ShapesDataset(self.split_sizes[split], self.image_size, split_seed, border_width=self.border_width)
