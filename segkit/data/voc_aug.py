"""`data=voc_aug`: VOC 2012 "train_aug", the usual training set of VOC segmentation papers: SBD's train
and val plus VOC's train, minus VOC's val (10,582 images), validated on VOC val (1,449).

Masks of the training set come from, in this order of preference:
- `VOCdevkit/VOC2012/SegmentationClassAug/<id>.png`, the widely shared folder of grayscale class-id
  PNGs, when it exists (its id list `ImageSets/Segmentation/train_aug.txt` is used when present,
  otherwise the lists of SBD and VOC below);
- VOC's own `SegmentationClass` for the images VOC annotates (finer, with ignored borders),
- SBD's `cls/*.mat` for the rest.
"""

from __future__ import annotations

from pathlib import Path

from segkit.data.files import FileDataModule, SampleFiles
from segkit.data.io import read_split_file
from segkit.data.palettes import VOC_CLASS_NAMES, voc_colour_to_id
from segkit.data.sbd import SBD_DIR, download_sbd, sbd_samples, sbd_split_ids
from segkit.data.voc import VOC_DIR, download_voc, voc_label_map, voc_samples, voc_split_ids

AUG_MASK_DIR = "SegmentationClassAug"
AUG_SPLIT_FILE = "ImageSets/Segmentation/train_aug.txt"


def voc_aug_train_ids(root: Path) -> list[str]:
    """SBD train + SBD val + VOC train, without VOC val, each id once, sorted."""
    listed = read_split_file(root / VOC_DIR / AUG_SPLIT_FILE) if (root / VOC_DIR / AUG_SPLIT_FILE).is_file() else [
        *sbd_split_ids(root, "train"), *sbd_split_ids(root, "val"), *voc_split_ids(root, "train")]
    return sorted(set(listed) - set(voc_split_ids(root, "val")))


def voc_aug_samples(root: Path, split: str) -> list[SampleFiles]:
    if split == "val":
        return voc_samples(root, voc_split_ids(root, "val"))
    ids = voc_aug_train_ids(root)
    if (root / VOC_DIR / AUG_MASK_DIR).is_dir():
        return voc_samples(root, ids, mask_dir=AUG_MASK_DIR)
    annotated_by_voc = set(voc_split_ids(root, "train"))
    samples = voc_samples(root, [i for i in ids if i in annotated_by_voc])
    samples += sbd_samples(root, [i for i in ids if i not in annotated_by_voc])
    return sorted(samples, key=lambda sample: sample.sample_id)


class VOCAugDataModule(FileDataModule):
    """VOC 2012 train_aug -> VOC 2012 val, 21 classes."""

    class_names = VOC_CLASS_NAMES

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_map = voc_label_map(self.ignore_index)
        self.colour_to_id = voc_colour_to_id(self.ignore_index)

    @property
    def layout_dirs(self) -> tuple[str, ...]:
        voc = self.root / VOC_DIR
        # SBD is needed for its lists unless SegmentationClassAug comes with its own list.
        needs_sbd = not ((voc / AUG_MASK_DIR).is_dir() and (voc / AUG_SPLIT_FILE).is_file())
        return (VOC_DIR, SBD_DIR) if needs_sbd else (VOC_DIR,)

    def split_samples(self, split: str) -> list[SampleFiles]:
        return voc_aug_samples(self.root, split)

    def download_files(self) -> None:
        download_voc(self.root)
        download_sbd(self.root)
