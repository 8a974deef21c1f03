"""`data=pets`: Oxford-IIIT Pet trimaps, as the official archives unpack below `root`:

    oxford-iiit-pet/images/<id>.jpg
    oxford-iiit-pet/annotations/trimaps/<id>.png     mode L: 1 pet, 2 background, 3 border
    oxford-iiit-pet/annotations/{trainval,test}.txt  lines "Abyssinian_100 1 1 1", the id first

mode "trimap" gives three classes (pet 0, background 1, border 2); mode "binary" two (pet, background),
the border ignored as the dataset's authors intend ("not classified").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segkit.data.files import FileDataModule, LabelMap, SampleFiles, SegmentationFiles, pair_files
from segkit.data.io import read_split_file
from segkit.data.palettes import PETS_CLASS_NAMES, TRIMAP_COLORMAP

PETS_DIR = "oxford-iiit-pet"
PETS_SPLITS = ("trainval", "test")


def pets_class_names(mode: str) -> tuple[str, ...]:
    if mode not in PETS_CLASS_NAMES:
        raise ValueError(f"data.mode must be one of {list(PETS_CLASS_NAMES)}, got {mode!r}")
    return PETS_CLASS_NAMES[mode]


def pets_label_map(mode: str, ignore_index: int = 255) -> LabelMap:
    pets_class_names(mode)  # checks the mode
    border = 2 if mode == "trimap" else ignore_index
    return LabelMap({1: 0, 2: 1, 3: border}, "the trimap values 1 (pet), 2 (background), 3 (border)")


def pets_samples(root: Path, split: str) -> list[SampleFiles]:
    if split not in PETS_SPLITS:
        raise ValueError(f"Pets splits are {PETS_SPLITS}, got {split!r}")
    base = root / PETS_DIR
    ids = read_split_file(base / "annotations" / f"{split}.txt")
    trimaps = base / "annotations" / "trimaps"
    return pair_files(ids, lambda i: base / "images" / f"{i}.jpg", lambda i: trimaps / f"{i}.png")


class PetsDataset(SegmentationFiles):
    """One split ("trainval" or "test") of Oxford-IIIT Pet below `root`."""

    def __init__(self, root: str | Path, split: str = "trainval", mode: str = "trimap", ignore_index: int = 255,
                 on_bad_sample: str = "error") -> None:
        super().__init__(pets_samples(Path(root), split), pets_label_map(mode, ignore_index), on_bad_sample)


class PetsDataModule(FileDataModule):
    """Pets trimaps: train on the trainval list, validate on `val_split` ("test", the benchmark's
    held-out list, by default). `split` may also name "test" directly."""

    layout_dirs = (PETS_DIR,)
    splits = ("train", "val", "test")
    colormap = TRIMAP_COLORMAP

    def __init__(self, mode: str = "trimap", val_split: str = "test", **kwargs) -> None:
        if val_split not in PETS_SPLITS:
            raise ValueError(f"data.val_split must be one of {PETS_SPLITS}, got {val_split!r}")
        self.class_names = pets_class_names(mode)
        super().__init__(**kwargs)
        self.label_map = pets_label_map(mode, self.ignore_index)
        self.mode = mode
        self.split_names = {"train": "trainval", "val": val_split, "test": "test"}

    @classmethod
    def config_class_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        return pets_class_names(config.get("mode", "trimap"))

    def split_samples(self, split: str) -> list[SampleFiles]:
        return pets_samples(self.root, self.split_names[split])

    def download_files(self) -> None:
        # Imported here: only downloading needs torchvision's datasets.
        from torchvision.datasets import OxfordIIITPet

        OxfordIIITPet(self.root, download=True, target_types="segmentation")
