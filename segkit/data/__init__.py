from segkit.data.datamodule import PadCollate, SegmentationDataModule
from segkit.data.files import FileDataModule, SegmentationFiles
from segkit.data.folder import FolderDataModule
from segkit.data.palettes import PETS_CLASS_NAMES, VOC_CLASS_NAMES
from segkit.data.pets import PetsDataModule, PetsDataset
from segkit.data.sbd import SBDDataModule, SBDDataset
from segkit.data.shapes import SHAPES_CLASS_NAMES, ShapesDataModule, ShapesDataset
from segkit.data.voc import VOCDataModule, VOCSegmentationDataset
from segkit.data.voc_aug import VOCAugDataModule
from segkit.runtime.images import DataError, InvalidFileError, MissingFileError
from segkit.utilities.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PETS_CLASS_NAMES",
    "SHAPES_CLASS_NAMES",
    "VOC_CLASS_NAMES",
    "DataError",
    "FileDataModule",
    "FolderDataModule",
    "InvalidFileError",
    "MissingFileError",
    "PadCollate",
    "PetsDataModule",
    "PetsDataset",
    "SBDDataModule",
    "SBDDataset",
    "SegmentationDataModule",
    "SegmentationFiles",
    "ShapesDataModule",
    "ShapesDataset",
    "VOCAugDataModule",
    "VOCDataModule",
    "VOCSegmentationDataset",
]
