"""The segkit LightningDataModule family.

A dataset reader returns (image, mask) as numpy arrays: H x W x 3 uint8 and H x W class ids. Everything
after that (augmentation, normalisation, tensors) happens here, once, through albumentations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from segkit.data.palettes import VOC_COLORMAP
from segkit.data.sampling import ResumableShuffle
from segkit.utilities.imagenet import IMAGENET_MEAN, IMAGENET_STD


class TransformedDataset(Dataset):
    """Applies an albumentations pipeline to a reader's (image, mask) pairs and returns tensors."""

    def __init__(self, samples: Dataset, pipeline: A.Compose) -> None:
        self.samples = samples
        self.pipeline = pipeline
        self._pipeline_seed: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, tuple):  # from ResumableShuffle: this sample's own augmentation seed
            index, seed = index
            self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
            self._pipeline_seed = None
        else:
            self._seed_from_process()
        image, mask = self.samples[index]
        out = self.pipeline(image=image, mask=mask)
        return out["image"], out["mask"].long()

    def _seed_from_process(self) -> None:
        # Albumentations keeps its own RNG, which forked DataLoader workers would all copy and so
        # repeat one another's augmentations. Seed it from torch's seed of this process instead:
        # distinct per worker and epoch, and reproducible under `seed_everything`.
        seed = torch.initial_seed() % 2**32
        if seed != self._pipeline_seed:
            self.pipeline.set_random_seed(seed)
            self._pipeline_seed = seed


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
    """Shared loaders and pipelines; a subclass names its classes, its splits and builds each split's reader.

    Training reads "train" and validates on "val"; Lightning's test loop (`segkit.eval`) reads `split`.
    """

    class_names: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "val")
    # Colour of each class id in predicted masks (`segkit.predict`); VOC's map gives 256 distinct colours.
    colormap: np.ndarray = VOC_COLORMAP

    def __init__(
        self,
        num_classes: int,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        ignore_index: int = 255,
        train_transforms: Sequence[A.BasicTransform] = (),
        val_transforms: Sequence[A.BasicTransform] = (),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        size_divisor: int = 32,
        split: str = "val",
    ) -> None:
        super().__init__()
        if split not in self.splits:
            raise ValueError(f"data.split={split!r} is not a split of {type(self).__name__}; expected one of "
                             f"{list(self.splits)}")
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
        # Keep the loader's workers between epochs rather than starting them again for each one.
        self.persistent_workers = persistent_workers
        self.ignore_index = ignore_index
        self.train_transforms = list(train_transforms)
        self.val_transforms = list(val_transforms)
        # None until set: `segkit.tasks.train.build` then takes the model's (ImageNet statistics for
        # pretrained encoders), so the normalisation travels with the weights.
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        # Validation reads whole images of any size; training recipes crop or resize to one size.
        self.val_collate = PadCollate(size_divisor, ignore_index)
        self.split = split
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def use_normalisation_of(self, net: torch.nn.Module) -> None:
        """Normalises with the network's statistics (`input_mean`, `input_std`) unless the config set its own."""
        if self.mean is None:
            self.mean, self.std = net.input_mean, net.input_std

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean and std that images are normalised with, on the 0..1 scale (ImageNet's until set)."""
        return self.mean or IMAGENET_MEAN, self.std or IMAGENET_STD

    @classmethod
    def config_class_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The classes of the datamodule that `config` (its data config) builds, known before building it."""
        return cls.class_names

    def config_found_in_data(self) -> dict[str, Any]:
        """Data config keys this datamodule found in the data itself (data=folder: its classes and colours),
        for the run's config, so that a checkpoint rebuilds the datamodule without reading the data."""
        return {}

    @property
    def skipped(self) -> dict[str, int]:
        """Bad samples skipped so far per split; only file datasets with on_bad_sample=skip have any."""
        return {}

    def pipeline(self, transforms: Sequence[A.BasicTransform]) -> A.Compose:
        """`transforms`, then normalisation and conversion to tensors."""
        mean, std = self.normalisation
        return A.Compose([*transforms, A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])

    def build_split(self, split: str) -> Dataset:
        """The reader of `split` (one of `splits`): a Dataset of (image, mask) numpy pairs."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        # Safe to call twice: readers are built once.
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = TransformedDataset(self.build_split("train"), self.pipeline(self.train_transforms))
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = TransformedDataset(self.build_split("val"), self.pipeline(self.val_transforms))
        if self.test_set is None and stage in (None, "test"):
            self.test_set = TransformedDataset(self.build_split(self.split), self.pipeline(self.val_transforms))

    def _loader(
        self, dataset: Dataset, sampler: Sampler | None = None, shuffle: bool = False, collate_fn: PadCollate | None = None
    ) -> DataLoader:
        training = sampler is not None or shuffle
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=shuffle,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=training and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Lightning gives each rank its share through a DistributedSampler (seeded by epoch).
            return self._loader(self.train_set, shuffle=True)
        epoch, skip = _resume_position(trainer)
        sampler = ResumableShuffle(len(self.train_set), torch.initial_seed(), epoch, skip * self.batch_size)
        return self._loader(self.train_set, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, collate_fn=self.val_collate)

    def calibration_dataloader(self, num_images: int) -> DataLoader:
        """The first `num_images` images of the training split through the validation transforms, in batches of
        data.batch_size: a fixed, unaugmented sample of training images, the same in every process and after a
        resume."""
        reader = self.train_set.samples
        subset = Subset(reader, range(min(len(reader), num_images)))
        dataset = TransformedDataset(subset, self.pipeline(self.val_transforms))
        return DataLoader(dataset, batch_size=self.batch_size, collate_fn=self.val_collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, collate_fn=self.val_collate)

    def training_masks(self) -> Iterator[np.ndarray]:
        """The class-id mask of every training sample as stored (no transforms), for statistics such as class
        frequencies; bad samples follow data.on_bad_sample as in training."""
        reader = self.train_set.samples if self.train_set is not None else self.build_split("train")
        for index in range(len(reader)):
            yield reader[index][1]


def _resume_position(trainer: L.Trainer | None) -> tuple[int, int]:
    """The epoch the next training iteration belongs to, and how many of its batches are already done.

    Called when the loader is built, which happens after a checkpoint's loop state is restored but
    before Lightning updates its epoch counter, so an epoch-end checkpoint still counts its epoch as
    in progress: its last batch done means the next epoch.
    """
    if trainer is None:
        return 0, 0
    epoch = trainer.fit_loop.epoch_progress.current.processed
    batches = trainer.fit_loop.epoch_loop.batch_progress
    if batches.is_last_batch:
        return epoch + 1, 0
    return epoch, batches.current.completed
