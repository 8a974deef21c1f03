"""`data=sbd`: the Semantic Boundaries Dataset (Hariharan et al. 2011), VOC's 21 classes on 11,355
images, as the official `benchmark.tgz` unpacks below `root`:

    benchmark_RELEASE/dataset/img/<id>.jpg
    benchmark_RELEASE/dataset/cls/<id>.mat     struct GTcls, field Segmentation: H x W class ids
    benchmark_RELEASE/dataset/{train,val}.txt
"""

from __future__ import annotations

from pathlib import Path

from segkit.data.files import FileDataModule, LabelMap, SampleFiles, SegmentationFiles, class_id_map, pair_files
from segkit.data.io import read_split_file
from segkit.data.palettes import VOC_CLASS_NAMES

SBD_DIR = "benchmark_RELEASE/dataset"
SBD_SPLITS = ("train", "val")


def sbd_label_map(ignore_index: int = 255) -> LabelMap:
    return class_id_map(len(VOC_CLASS_NAMES), ignore_index, "the SBD class ids 0..20 (and 255, ignored)")


def sbd_split_ids(root: Path, split: str) -> list[str]:
    if split not in SBD_SPLITS:
        raise ValueError(f"SBD splits are {SBD_SPLITS}, got {split!r}")
    return read_split_file(root / SBD_DIR / f"{split}.txt")


def sbd_samples(root: Path, ids: list[str]) -> list[SampleFiles]:
    base = root / SBD_DIR
    return pair_files(ids, lambda i: base / "img" / f"{i}.jpg", lambda i: base / "cls" / f"{i}.mat")


def download_sbd(root: Path) -> None:
    if (root / SBD_DIR / "cls").is_dir():
        return
    # torchvision's SBDataset moves the files out of the official layout; fetch its archive directly.
    from torchvision.datasets import SBDataset
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(SBDataset.url, str(root), filename=SBDataset.filename, md5=SBDataset.md5)


class SBDDataset(SegmentationFiles):
    """One split ("train" or "val") of SBD below `root`."""

    def __init__(self, root: str | Path, split: str = "train", ignore_index: int = 255,
                 on_bad_sample: str = "error") -> None:
        super().__init__(sbd_samples(Path(root), sbd_split_ids(Path(root), split)), sbd_label_map(ignore_index),
                         on_bad_sample)


class SBDDataModule(FileDataModule):
    """SBD: train on its train list (8,498 images), validate on val (2,857), VOC's 21 classes."""

    class_names = VOC_CLASS_NAMES
    layout_dirs = (SBD_DIR,)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_map = sbd_label_map(self.ignore_index)

    def split_samples(self, split: str) -> list[SampleFiles]:
        return sbd_samples(self.root, sbd_split_ids(self.root, split))

    def download_files(self) -> None:
        download_sbd(self.root)
