"""Bad files: errors that name the file and what was expected, skipping, downloading (segkit/data/files.py)."""

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from segkit.data import (
    DataError,
    InvalidFileError,
    MissingFileError,
    PetsDataModule,
    PetsDataset,
    VOCDataModule,
    VOCSegmentationDataset,
)
from segkit.data.io import read_sbd_mat, read_split_file
from segkit.data.palettes import voc_palette
from tests.conftest import write_image, write_pets


def voc_file(root: Path, folder: str, sample_id: str = "2007_000032") -> Path:
    return root / "VOCdevkit/VOC2012" / folder / f"{sample_id}.{'png' if folder.startswith('Seg') else 'jpg'}"


def test_corrupt_image_names_the_file(voc_root):
    path = voc_file(voc_root, "JPEGImages")
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(InvalidFileError, match=rf"{path}: cannot decode the image"):
        VOCSegmentationDataset(voc_root, "train")[0]
    path.write_bytes(b"not an image")
    with pytest.raises(InvalidFileError, match=rf"{path}: cannot decode the image"):
        VOCSegmentationDataset(voc_root, "train")[0]


def test_empty_mask_names_the_file(voc_root):
    path = voc_file(voc_root, "SegmentationClass")
    path.write_bytes(b"")
    with pytest.raises(InvalidFileError, match=rf"{path}: mask is an empty file \(0 bytes\)"):
        VOCSegmentationDataset(voc_root, "train")[0]


def test_missing_image_names_the_file(voc_root):
    path = voc_file(voc_root, "JPEGImages")
    path.unlink()
    with pytest.raises(MissingFileError, match=rf"{path}: image not found"):
        VOCSegmentationDataset(voc_root, "train")[0]


def test_image_and_mask_of_different_sizes_name_both(voc_root):
    image_path, mask_path = voc_file(voc_root, "JPEGImages"), voc_file(voc_root, "SegmentationClass")
    write_image(image_path, (41, 50), seed=0)
    expected = rf"{mask_path}: mask is 40x50 \(HxW\) but its image {image_path} is 41x50; expected the same size"
    with pytest.raises(InvalidFileError, match=expected):
        VOCSegmentationDataset(voc_root, "train")[0]


def test_mask_value_outside_the_classes_names_file_and_values(tmp_path):
    trimaps = write_pets(tmp_path, {"trainval": ["cat_1"], "test": ["cat_2"]})
    path = tmp_path / "oxford-iiit-pet/annotations/trimaps/cat_1.png"
    trimap = trimaps["cat_1"].copy()
    trimap[0, :2] = (0, 7)
    Image.fromarray(trimap).save(path)
    expected = rf"{path}: mask values \[0, 7\] are outside the trimap values 1 \(pet\), 2 \(background\), 3"
    with pytest.raises(InvalidFileError, match=expected):
        PetsDataset(tmp_path, "trainval")[0]


def test_voc_value_21_is_outside_the_classes(voc_root):
    path = voc_file(voc_root, "SegmentationClass")
    mask = Image.fromarray(np.full((40, 50), 21, dtype=np.uint8), mode="P")
    mask.putpalette(voc_palette())  # without a palette PIL would renumber the indices on saving
    mask.save(path)
    with pytest.raises(InvalidFileError, match=r"mask values \[21\] are outside the VOC class ids 0..20 and 255"):
        VOCSegmentationDataset(voc_root, "train")[0]


def test_missing_split_file_names_it(voc_root):
    path = voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    path.unlink()
    with pytest.raises(MissingFileError, match=rf"{path}: split file not found"):
        VOCSegmentationDataset(voc_root, "val")


def test_duplicate_ids_in_a_split_name_them(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("a 1 1 1\nb 1 1 1\na 1 1 1\n\n")
    with pytest.raises(InvalidFileError, match=rf"{path}: split file lists ids more than once: \['a'\]"):
        read_split_file(path)
    path.write_text("# comment only\n")
    with pytest.raises(InvalidFileError, match="lists no sample ids"):
        read_split_file(path)


def test_sbd_mat_without_gtcls_names_what_it_found(tmp_path):
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(InvalidFileError, match=rf"{path}: expected a struct GTcls, found variables \['GTinst'\]"):
        read_sbd_mat(path)


def test_missing_root_suggests_download_or_root(tmp_path):
    datamodule = PetsDataModule(root=tmp_path / "nowhere", num_classes=3)
    expected = r"nowhere/oxford-iiit-pet: folder not found.*data.root=.*data.download=true"
    with pytest.raises(MissingFileError, match=expected):
        datamodule.setup("fit")


def test_errors_are_value_or_file_not_found_errors_of_one_class():
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, DataError)
    assert issubclass(InvalidFileError, ValueError) and issubclass(InvalidFileError, DataError)


def test_skip_logs_counts_and_replaces_bad_samples(voc_root, caplog):
    voc_file(voc_root, "JPEGImages", "2007_000039").write_bytes(b"broken")
    datamodule = VOCDataModule(root=voc_root, num_classes=21, on_bad_sample="skip")
    datamodule.setup("fit")
    reader = datamodule.readers["train"]
    with caplog.at_level(logging.WARNING, logger="segkit.data.files"):
        replaced = [reader[1] for _ in range(3)]
    assert np.array_equal(replaced[0][1], reader.load(2)[1])  # the next good sample stands in
    assert datamodule.skipped == {"train": 1, "val": 0} and reader.skipped_ids == ["2007_000039"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2007_000039.jpg: cannot decode the image" in warnings[0].getMessage()
    with pytest.raises(InvalidFileError):
        VOCDataModule(root=voc_root, num_classes=21).build_split("train")[1]


def test_skip_counts_bad_samples_read_by_loader_workers(voc_root):
    voc_file(voc_root, "SegmentationClass", "2007_000039").write_bytes(b"")
    datamodule = VOCDataModule(root=voc_root, num_classes=21, on_bad_sample="skip", num_workers=2, batch_size=1,
                               train_transforms=[], val_transforms=[])
    datamodule.setup("fit")
    assert len(list(datamodule.val_dataloader())) == 2
    assert sum(1 for _ in datamodule.train_dataloader()) == 3
    assert datamodule.skipped == {"train": 1, "val": 0}


def test_download_happens_only_in_prepare_data_when_asked(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(PetsDataModule, "download_files", lambda self: calls.append(self.root))
    PetsDataModule(root=tmp_path, num_classes=3).prepare_data()
    assert calls == []
    PetsDataModule(root=tmp_path, num_classes=3, download=True).prepare_data()
    assert calls == [tmp_path]
