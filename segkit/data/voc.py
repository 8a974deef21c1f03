"""`data=voc`: PASCAL VOC 2012 segmentation, as the official archive unpacks below `root`:

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png       palette PNG: index = class id, 255 on object borders
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

Masks re-saved as RGB colour images are read through the VOC colour map.
"""

from __future__ import annotations

from pathlib import Path

from segkit.data.files import FileDataModule, LabelMap, SampleFiles, SegmentationFiles, class_id_map, pair_files
from segkit.data.io import read_split_file
from segkit.data.palettes import VOC_CLASS_NAMES, voc_colour_to_id

VOC_DIR = "VOCdevkit/VOC2012"
VOC_SPLITS = ("train", "val", "trainval")


def voc_label_map(ignore_index: int = 255) -> LabelMap:
    return class_id_map(len(VOC_CLASS_NAMES), ignore_index, "the VOC class ids 0..20 and 255 (border)")


def voc_split_ids(root: Path, split: str) -> list[str]:
    if split not in VOC_SPLITS:
        raise ValueError(f"VOC segmentation splits are {VOC_SPLITS}, got {split!r}")
    return read_split_file(root / VOC_DIR / "ImageSets" / "Segmentation" / f"{split}.txt")


def voc_samples(root: Path, ids: list[str], mask_dir: str = "SegmentationClass") -> list[SampleFiles]:
    base = root / VOC_DIR
    return pair_files(ids, lambda i: base / "JPEGImages" / f"{i}.jpg", lambda i: base / mask_dir / f"{i}.png")


def download_voc(root: Path) -> None:
    if (root / VOC_DIR / "SegmentationClass").is_dir():
        return
    # Imported here: only downloading needs torchvision's datasets.
    from torchvision.datasets import VOCSegmentation

    VOCSegmentation(root, year="2012", image_set="train", download=True)


class VOCSegmentationDataset(SegmentationFiles):
    """One split ("train", "val" or "trainval") of VOC 2012 segmentation below `root`."""

    def __init__(self, root: str | Path, split: str = "train", ignore_index: int = 255,
                 on_bad_sample: str = "error") -> None:
        samples = voc_samples(Path(root), voc_split_ids(Path(root), split))
        super().__init__(samples, voc_label_map(ignore_index), on_bad_sample, voc_colour_to_id(ignore_index))


class VOCDataModule(FileDataModule):
    """VOC 2012: train on its train list (1,464 images), validate on val (1,449), 21 classes."""

    class_names = VOC_CLASS_NAMES
    layout_dirs = (VOC_DIR,)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_map = voc_label_map(self.ignore_index)
        self.colour_to_id = voc_colour_to_id(self.ignore_index)

    def split_samples(self, split: str) -> list[SampleFiles]:
        return voc_samples(self.root, voc_split_ids(self.root, split))

    def download_files(self) -> None:
        download_voc(self.root)
