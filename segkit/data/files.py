"""What every reader of image and mask files shares: decoding, checks, the bad-sample policy, and the
DataModule base of the file datasets. A dataset module only lists its (image, mask) file pairs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segkit.data.datamodule import SegmentationDataModule
from segkit.data.io import read_mask
from segkit.runtime.images import DataError, InvalidFileError, MissingFileError, read_image

log = logging.getLogger(__name__)

ON_BAD_SAMPLE = ("error", "skip")


def check_on_bad_sample(on_bad_sample: str) -> str:
    if on_bad_sample not in ON_BAD_SAMPLE:
        raise ValueError(f"data.on_bad_sample must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
    return on_bad_sample


@dataclass(frozen=True)
class SampleFiles:
    sample_id: str
    image: Path
    mask: Path


class LabelMap:
    """Maps the raw values a dataset stores in its masks to class ids; any other value is an error."""

    def __init__(self, raw_to_id: Mapping[int, int], expected: str) -> None:
        self.lookup = np.full(max(raw_to_id) + 1, -1, dtype=np.int16)
        for raw, class_id in raw_to_id.items():
            self.lookup[raw] = class_id
        self.expected = expected

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        values = np.unique(raw)
        known = (values >= 0) & (values < len(self.lookup))
        known[known] = self.lookup[values[known].astype(np.intp)] >= 0
        if not known.all():
            raise InvalidFileError(f"{path}: mask values {values[~known][:10].tolist()} are outside {self.expected}")
        return self.lookup[raw.astype(np.intp)].astype(np.uint8)


class SegmentationFiles(Dataset):
    """(image, mask) pairs read from files: H x W x 3 uint8 RGB and H x W uint8 class ids.

    `load(i)` raises a `DataError` for a bad sample. Indexing applies `on_bad_sample`: "error" raises,
    "skip" logs a warning, records the sample as bad and returns the next good sample in its place. The
    record lives in shared memory, so DataLoader workers add to the same count and read a bad file once.
    """

    def __init__(
        self,
        samples: Sequence[SampleFiles],
        label_map: LabelMap,
        on_bad_sample: str = "error",
        colour_to_id: Mapping[tuple[int, int, int], int] | None = None,
    ) -> None:
        if not samples:
            raise ValueError("a dataset split needs at least one sample")
        self.samples = list(samples)
        self.label_map = label_map
        self.on_bad_sample = check_on_bad_sample(on_bad_sample)
        self.colour_to_id = colour_to_id
        self.is_bad = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image = read_image(sample.image)
        mask = self.label_map(read_mask(sample.mask, self.colour_to_id), sample.mask)
        if image.shape[:2] != mask.shape:
            raise InvalidFileError(
                f"{sample.mask}: mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image {sample.image} "
                f"is {image.shape[0]}x{image.shape[1]}; expected the same size"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.on_bad_sample == "error":
            return self.load(index)
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if self.is_bad[candidate]:
                continue
            try:
                return self.load(candidate)
            except DataError as error:
                self.is_bad[candidate] = True
                log.warning("skipping bad sample %s (%d bad so far): %s", self.samples[candidate].sample_id,
                            self.num_skipped, error)
        raise DataError(f"every one of the {len(self)} samples is bad; see the warnings above")

    @property
    def num_skipped(self) -> int:
        return int(self.is_bad.sum())

    @property
    def skipped_ids(self) -> list[str]:
        return [self.samples[i].sample_id for i in torch.nonzero(self.is_bad).flatten().tolist()]


class FileDataModule(SegmentationDataModule):
    """Base of the DataModules that read a dataset in its official layout below `root`.

    A subclass names `layout_dirs` (below `root`, checked before reading), lists each split's files in
    `split_samples`, gives its `label_map` and fetches the archives in `download_files`.
    """

    layout_dirs: tuple[str, ...] = ()
    label_map: LabelMap
    colour_to_id: Mapping[tuple[int, int, int], int] | None = None

    def __init__(
        self,
        root: str | Path,
        download: bool = False,
        on_bad_sample: str = "error",
        image_size: Sequence[int] | None = None,
        num_train: int | None = None,
        num_val: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.download = download
        self.on_bad_sample = check_on_bad_sample(on_bad_sample)
        # Read by the transforms in the config (crop or resize size); kept for reference.
        self.image_size = tuple(image_size) if image_size is not None else None
        # The first N samples of a split (None: all), for quick runs on real data; num_val also limits
        # the split that is evaluated.
        self.split_limits = {split: num_train if split == "train" else num_val for split in self.splits}
        self.readers: dict[str, SegmentationFiles] = {}

    def split_samples(self, split: str) -> list[SampleFiles]:
        """The file pairs of `split` (one of `splits`)."""
        raise NotImplementedError

    def download_files(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot download its dataset; fetch it by hand")

    def prepare_data(self) -> None:
        # Lightning calls this once per machine (rank 0), before setup.
        if self.download:
            self.root.mkdir(parents=True, exist_ok=True)
            self.download_files()

    def check_layout(self) -> None:
        for relative in self.layout_dirs:
            if not (self.root / relative).is_dir():
                raise MissingFileError(
                    f"{self.root / relative}: folder not found. {type(self).__name__} reads the official layout "
                    f"<root>/{relative}; set data.root=... to the folder that holds {relative.split('/')[0]}, "
                    f"or data.download=true to fetch the dataset there"
                )

    def build_split(self, split: str) -> SegmentationFiles:
        self.check_layout()
        samples = self.split_samples(split)[: self.split_limits[split]]
        self.readers[split] = SegmentationFiles(samples, self.label_map, self.on_bad_sample, self.colour_to_id)
        return self.readers[split]

    @property
    def skipped(self) -> dict[str, int]:
        """Bad samples skipped so far per split (with on_bad_sample=skip)."""
        return {split: reader.num_skipped for split, reader in self.readers.items()}


def pair_files(
    ids: Sequence[str], image_path: Callable[[str], Path], mask_path: Callable[[str], Path]
) -> list[SampleFiles]:
    return [SampleFiles(sample_id, image_path(sample_id), mask_path(sample_id)) for sample_id in ids]


def class_id_map(num_classes: int, ignore_index: int, expected: str) -> LabelMap:
    """Masks that store class ids 0..num_classes-1 directly and 255 where a pixel is to be ignored."""
    return LabelMap({**{i: i for i in range(num_classes)}, 255: ignore_index}, expected)
