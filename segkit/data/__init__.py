from segkit.data.datamodule import IMAGENET_MEAN, IMAGENET_STD, SegmentationDataModule, ShapesDataModule
from segkit.data.shapes import SHAPES_CLASS_NAMES, ShapesDataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES_CLASS_NAMES",
    "SegmentationDataModule",
    "ShapesDataModule",
    "ShapesDataset",
]
