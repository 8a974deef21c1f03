"""The readers of the official dataset layouts (segkit/data/pets.py, voc.py, sbd.py, voc_aug.py), on fixtures
written in those formats and on the real Pets sample."""

import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image

from segkit.data import PetsDataset, SBDDataset, VOCAugDataModule, VOCSegmentationDataset
from segkit.data.io import read_sbd_mat
from segkit.data.palettes import voc_ids_to_colours
from segkit.runtime.images import read_image
from tests.conftest import VOC_SPLITS, require_shared_pets, write_pets, write_sbd, write_voc


def test_pets_trimap_values_become_pet_background_border_ids(tmp_path):
    trimaps = write_pets(tmp_path, {"trainval": ["Abyssinian_1", "beagle_2"], "test": ["pug_3"]})
    trainval = PetsDataset(tmp_path, "trainval")
    assert len(trainval) == 2 and len(PetsDataset(tmp_path, "test")) == 1
    image, mask = trainval[1]
    stored = trimaps["beagle_2"]
    assert image.shape == (*stored.shape, 3) and image.dtype == np.uint8 and mask.dtype == np.uint8
    assert np.array_equal(mask, stored - 1)  # 1 pet, 2 background, 3 border -> 0, 1, 2
    assert set(np.unique(mask)) == {0, 1, 2}


def test_pets_binary_mode_ignores_the_border(tmp_path):
    trimaps = write_pets(tmp_path, {"trainval": ["Abyssinian_1"], "test": ["pug_3"]})
    _, mask = PetsDataset(tmp_path, "trainval", mode="binary")[0]
    stored = trimaps["Abyssinian_1"]
    assert np.array_equal(mask == 255, stored == 3) and np.array_equal(mask == 0, stored == 1)
    assert set(np.unique(mask)) == {0, 1, 255}


def test_voc_reads_palette_indices_with_255_borders(tmp_path):
    masks = write_voc(tmp_path, VOC_SPLITS)
    reader = VOCSegmentationDataset(tmp_path, "val")
    assert [s.sample_id for s in reader.samples] == VOC_SPLITS["val"]
    image, mask = reader[1]
    assert np.array_equal(mask, masks["2009_000001"]) and image.shape == (*mask.shape, 3)
    assert 255 in mask and mask[8:-8, 10:-10].max() == 255 and mask[0, 0] == 0


def test_voc_reads_masks_saved_as_rgb_colours(tmp_path):
    masks = write_voc(tmp_path, VOC_SPLITS)
    mask_path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png"
    Image.fromarray(voc_ids_to_colours(masks["2007_000032"])).save(mask_path)
    assert Image.open(mask_path).mode == "RGB"
    _, mask = VOCSegmentationDataset(tmp_path, "train")[0]
    assert np.array_equal(mask, masks["2007_000032"])


def test_sbd_reads_the_segmentation_field_of_gtcls_as_scipy_writes_it(tmp_path):
    masks = write_sbd(tmp_path, {"train": ["2008_000002", "2008_000003"], "val": ["2008_000008"]})
    path = tmp_path / "benchmark_RELEASE/dataset/cls/2008_000003.mat"
    assert np.array_equal(read_sbd_mat(path), masks["2008_000003"])
    image, mask = SBDDataset(tmp_path, "train")[1]
    assert np.array_equal(mask, masks["2008_000003"]) and image.shape == (*mask.shape, 3)
    assert len(SBDDataset(tmp_path, "val")) == 1


def test_voc_aug_train_is_sbd_train_val_plus_voc_train_minus_voc_val(tmp_path):
    voc_masks = write_voc(tmp_path, {"train": ["a", "e"], "val": ["v1", "v2"]})
    sbd_masks = write_sbd(tmp_path, {"train": ["a", "b", "c"], "val": ["d", "v1"]})
    datamodule = VOCAugDataModule(root=tmp_path, num_classes=21)
    train, val = datamodule.build_split("train"), datamodule.build_split("val")
    assert [s.sample_id for s in train.samples] == ["a", "b", "c", "d", "e"]
    assert [s.sample_id for s in val.samples] == ["v1", "v2"]
    # VOC's own masks where VOC annotates the image, SBD's elsewhere.
    sources = {s.sample_id: s.mask.suffix for s in train.samples}
    assert sources == {"a": ".png", "b": ".mat", "c": ".mat", "d": ".mat", "e": ".png"}
    assert np.array_equal(train[0][1], voc_masks["a"]) and np.array_equal(train[3][1], sbd_masks["d"])


def test_voc_aug_prefers_the_segmentation_class_aug_folder(tmp_path):
    splits = {"train": ["a", "e"], "val": ["v1"], "train_aug": ["a", "b", "e", "v1"]}
    aug_masks = write_voc(tmp_path, splits, mask_dir="SegmentationClassAug", palette=False)
    write_voc(tmp_path, splits)  # the same ids, with SegmentationClass for the val split
    datamodule = VOCAugDataModule(root=tmp_path, num_classes=21)
    train = datamodule.build_split("train")  # no SBD: the train_aug list stands in for its lists
    assert [s.sample_id for s in train.samples] == ["a", "b", "e"]
    assert all(s.mask.parent.name == "SegmentationClassAug" for s in train.samples)
    assert np.array_equal(train[1][1], aug_masks["b"])
    assert datamodule.build_split("val").samples[0].mask.parent.name == "SegmentationClass"


# The real Pets sample, quirks included


def test_real_pets_sample_has_200_trainval_and_198_test_ids():
    root = require_shared_pets()
    assert len(PetsDataset(root, "trainval")) == 200 and len(PetsDataset(root, "test")) == 198
    test_ids = {s.sample_id for s in PetsDataset(root, "test").samples}
    assert "Abyssinian_5" in test_ids


def test_real_pets_gif_and_rgba_files_decode_to_rgb_of_their_size():
    images = require_shared_pets() / "oxford-iiit-pet" / "images"
    assert Image.open(images / "Abyssinian_34.jpg").format == "GIF"
    assert Image.open(images / "Abyssinian_5.jpg").mode == "RGBA"
    assert read_image(images / "Abyssinian_34.jpg").shape == (202, 250, 3)
    assert read_image(images / "Abyssinian_5.jpg").shape == (150, 200, 3)
    reader = PetsDataset(images.parents[1], "test")
    index = [s.sample_id for s in reader.samples].index("Abyssinian_5")
    image, mask = reader[index]
    assert image.shape == (150, 200, 3) and mask.shape == (150, 200) and set(np.unique(mask)) <= {0, 1, 2}


def test_real_pets_datamodule_loads_a_batch(make_config):
    root = require_shared_pets()
    cfg = make_config("experiment=pets_dsc_segnet", f"data.root={root}", "data.num_workers=0", "data.batch_size=4")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 32 and len(datamodule.val_set) == 16  # TINY's num_train, num_val
    images, masks = next(iter(datamodule.train_dataloader()))
    crop = cfg.data.train_transforms[1]  # the recipe trains on random crops of a fixed size
    assert crop._target_ == "albumentations.RandomResizedCrop"
    assert images.shape == (4, 3, *crop.size) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= {0, 1, 2}
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 3, 32, 32)
