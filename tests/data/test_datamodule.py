"""Batches of variable-size validation images and the data configs (segkit/data/datamodule.py)."""

import pytest
import torch
from hydra.utils import instantiate

from segkit.data import PadCollate
from segkit.engine.module import segmentation_metrics


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
