import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hydra.utils import instantiate
from PIL import Image

from segkit.data import (
    DataError,
    InvalidFileError,
    MissingFileError,
    PadCollate,
    PetsDataModule,
    PetsDataset,
    SBDDataset,
    VOCAugDataModule,
    VOCDataModule,
    VOCSegmentationDataset,
)
from segkit.data.io import read_mask_png, read_sbd_mat, read_split_file
from segkit.data.palettes import voc_colours_to_ids, voc_ids_to_colours, voc_palette
from segkit.image_files import read_image
from segkit.module import segmentation_metrics

from .official_layouts import require_shared_pets, write_image, write_pets, write_sbd, write_voc

VOC_SPLITS = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000001"]}


# Readers of the official layouts


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


# Decoding real files as they are


def test_grayscale_palette_rgba_gif_and_16_bit_images_decode_to_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.jpg", quality=100)
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "animation.jpg", format="GIF")  # a GIF named .jpg
    Image.fromarray(np.dstack([pixels, np.full((20, 30), 7, np.uint8)])).save(tmp_path / "rgba.jpg", format="PNG")
    Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    for name in ("gray.jpg", "palette.png", "animation.jpg", "rgba.jpg", "deep.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8, name
    assert np.array_equal(read_image(tmp_path / "rgba.jpg"), pixels)  # alpha dropped, colours kept
    assert np.array_equal(read_image(tmp_path / "deep.png")[..., 1], pixels[..., 0])  # 16 -> 8 bits


def test_exif_orientation_is_honoured(tmp_path):
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :5] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    image = read_image(tmp_path / "rotated.jpg")
    assert image.shape == (30, 20, 3)
    assert image[:5].mean() > 200 and image[-5:].mean() < 50  # the band is now on top


def test_16_bit_and_palette_masks_read_as_class_ids(tmp_path):
    ids = np.array([[0, 1, 20], [255, 3, 0]], dtype=np.uint8)
    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "deep.png")
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette(voc_palette())
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.array_equal(read_mask_png(tmp_path / "deep.png"), ids)
    assert np.array_equal(read_mask_png(tmp_path / "palette.png"), ids)


def test_voc_colours_and_ids_round_trip():
    ids = np.array([[0, 15, 20], [255, 1, 8]], dtype=np.uint8)
    colours = voc_ids_to_colours(ids)
    assert tuple(colours[0, 1]) == (192, 128, 128)  # person
    assert tuple(colours[1, 1]) == (128, 0, 0) and tuple(colours[1, 0]) == (224, 224, 192)  # aeroplane, border
    assert np.array_equal(voc_colours_to_ids(colours), ids)
    unknown = r"colours \(1, 2, 3\) \(1 pixels\) are not in the palette of 22 class colours; known colours"
    with pytest.raises(InvalidFileError, match=unknown + r" \(-> id\): \(0, 0, 0\) -> 0, \(128, 0, 0\) -> 1"):
        voc_colours_to_ids(np.array([[[1, 2, 3]]], dtype=np.uint8))


# Errors that name the file and what was expected


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    write_voc(tmp_path, VOC_SPLITS)
    return tmp_path


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


# Variable-size validation


def test_pad_collate_pads_to_the_divisor_with_zero_and_ignore_index():
    batch = [(torch.ones(3, 40, 50), torch.full((40, 50), 2)), (torch.ones(3, 47, 33), torch.full((47, 33), 1))]
    images, masks = PadCollate(size_divisor=32, ignore_index=255)(batch)
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64)
    assert images[0, :, :40, :50].eq(1).all() and images[0, :, 40:].eq(0).all() and images[0, :, :, 50:].eq(0).all()
    assert masks[1, :47, :33].eq(1).all() and masks[1, 47:].eq(255).all() and masks[1, :, 33:].eq(255).all()
    assert PadCollate(size_divisor=16)(batch)[0].shape == (2, 3, 48, 64)


def test_padding_never_counts_in_the_metrics():
    truth = torch.randint(0, 3, (1, 40, 50))
    images, masks = PadCollate(32, 255)([(torch.zeros(3, 40, 50), truth[0])])
    prediction = torch.zeros_like(masks)  # wrong everywhere in the padding unless it is ignored
    prediction[:, :40, :50] = truth
    metrics = segmentation_metrics(3, ignore_index=255)
    metrics.update(prediction, masks)
    assert metrics.compute()["miou"].item() == pytest.approx(1.0)


def test_voc_config_crops_for_training_and_validates_whole_images(voc_root, make_config):
    cfg = make_config("data=voc", f"data.root={voc_root}", "data.num_workers=0", "data.batch_size=2",
                      "data.image_size=[32,32]")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images, masks = next(iter(datamodule.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    assert set(masks.unique().tolist()) <= set(range(21)) | {255}
    images, masks = next(iter(datamodule.val_dataloader()))
    sizes = [datamodule.val_set.samples[i][1].shape for i in range(2)]
    assert sizes == [(47, 55), (40, 55)]
    assert images.shape == (2, 3, 64, 64)  # both padded to the next multiples of 32
    unpadded = torch.from_numpy(datamodule.val_set.samples[1][1]).long()
    assert torch.equal(masks[1, :40, :55], unpadded) and masks[1, 40:].eq(255).all() and masks[1, :, 55:].eq(255).all()


def test_pets_binary_mode_sets_two_classes_for_data_and_model(make_config):
    cfg = make_config("data=pets", "data.mode=binary")
    assert cfg.data.num_classes == cfg.model.num_classes == 2
    assert instantiate(cfg.data).class_names == ("pet", "background")
    assert make_config("data=pets").model.num_classes == 3


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
    assert images.shape == (4, 3, 32, 32) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= {0, 1, 2}
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 3, 32, 32)
