import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy import ndimage

from segkit.data import SHAPES_CLASS_NAMES, ShapesDataModule, ShapesDataset
from segkit.data.shapes import BACKGROUND, BORDER, OBJECT


def miou(prediction: np.ndarray, truth: np.ndarray, num_classes: int = 3) -> float:
    ious = []
    for c in range(num_classes):
        union = np.logical_or(prediction == c, truth == c).sum()
        ious.append(np.logical_and(prediction == c, truth == c).sum() / union if union else 0.0)
    return float(np.mean(ious))


def test_samples_are_seeded_per_index_and_differ_between_indices_and_seeds():
    first, again = ShapesDataset(10, seed=3), ShapesDataset(10, seed=3)
    for i in (7, 0, 7):
        assert np.array_equal(first[i][0], again[i][0]) and np.array_equal(first[i][1], again[i][1])
    assert not np.array_equal(first[0][0], first[1][0])
    assert not np.array_equal(first[0][0], ShapesDataset(10, seed=4)[0][0])


def test_images_and_masks_have_the_trimap_layout():
    samples = ShapesDataset(20, image_size=(48, 80), seed=0)
    for i in range(len(samples)):
        image, mask = samples[i]
        assert image.shape == (48, 80, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 80) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {OBJECT, BACKGROUND, BORDER}
        assert (mask == OBJECT).any() and (mask == BORDER).any()
        # The border separates the classes: no object pixel touches a background pixel.
        grown_object = ndimage.binary_dilation(mask == OBJECT)
        assert not (grown_object & (mask == BACKGROUND)).any()
    assert SHAPES_CLASS_NAMES == ("object", "background", "border")


def test_border_is_thin():
    samples = ShapesDataset(20, image_size=(64, 64), seed=0)
    masks = np.stack([samples[i][1] for i in range(20)])
    fractions = np.bincount(masks.ravel(), minlength=3) / masks.size
    assert 0.02 < fractions[BORDER] < 0.15
    assert fractions[BACKGROUND] > fractions[OBJECT] > fractions[BORDER]


def test_majority_class_and_colour_alone_score_below_half_miou():
    train, val = ShapesDataset(300, seed=0), ShapesDataset(100, seed=1)
    val_masks = np.stack([val[i][1] for i in range(len(val))])
    val_images = np.stack([val[i][0] for i in range(len(val))])

    majority = np.full_like(val_masks, np.bincount(val_masks.ravel()).argmax())
    assert miou(majority, val_masks) < 0.5

    # The best any colour threshold can do: a lookup table from quantised colour to the class seen
    # most often with it on the training set.
    def colour_bins(images):
        q = images.astype(np.int64) // 16
        return q[..., 0] * 256 + q[..., 1] * 16 + q[..., 2]

    train_images = np.stack([train[i][0] for i in range(len(train))])
    train_masks = np.stack([train[i][1] for i in range(len(train))])
    counts = np.zeros((16**3, 3), dtype=np.int64)
    np.add.at(counts, (colour_bins(train_images).ravel(), train_masks.ravel()), 1)
    colour_classifier = counts.argmax(axis=1)
    assert miou(colour_classifier[colour_bins(val_images)], val_masks) < 0.5


def test_datamodule_batches_are_normalised_tensors_with_long_masks():
    datamodule = ShapesDataModule(num_classes=3, num_train=10, num_val=6, image_size=(32, 48), batch_size=4,
                                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    datamodule.setup("fit")
    images, masks = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 3, 32, 48) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 48) and masks.dtype == torch.int64
    assert -2.1 <= images.min() and images.max() <= 2.1
    assert len(datamodule.val_dataloader()) == 2
    raw_image, raw_mask = datamodule.val_set.samples[0]
    image, mask = datamodule.val_set[0]
    assert torch.allclose(image, (torch.from_numpy(raw_image).permute(2, 0, 1) / 255 - 0.5) / 0.25, atol=1e-5)
    assert torch.equal(mask, torch.from_numpy(raw_mask).long())


def test_transforms_from_config_move_masks_with_images(make_config):
    cfg = make_config("data.train_transforms.0.p=1.0")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert isinstance(datamodule.train_set.pipeline.transforms[0], A.HorizontalFlip)
    raw_image, raw_mask = datamodule.train_set.samples[0]
    _, mask = datamodule.train_set[0]
    assert torch.equal(mask, torch.from_numpy(raw_mask[:, ::-1].copy()).long())


def test_augmentations_are_reproducible_for_a_seed_and_differ_across_seeds():
    def draws(seed: int) -> list[torch.Tensor]:
        datamodule = ShapesDataModule(num_classes=3, num_train=4, num_val=2, image_size=(32, 32),
                                      train_transforms=[A.RandomBrightnessContrast(p=1.0)])
        datamodule.setup("fit")
        torch.manual_seed(seed)
        return [datamodule.train_set[0][0] for _ in range(2)]

    first, again, other = draws(1), draws(1), draws(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # each read draws new augmentation parameters
    assert not torch.equal(first[0], other[0])


def test_num_classes_that_disagrees_with_the_dataset_names_both():
    with pytest.raises(ValueError, match=r"data.num_classes=4 disagrees with ShapesDataModule.*3 classes"):
        ShapesDataModule(num_classes=4)


def test_loader_workers_persist_across_epochs_unless_switched_off(make_config):
    def train_loader(*overrides):
        datamodule = instantiate(make_config(*overrides).data)
        datamodule.setup("fit")
        return datamodule.train_dataloader()

    assert train_loader("data.num_workers=1").persistent_workers is True  # the configs' default
    assert train_loader("data.num_workers=1", "data.persistent_workers=false").persistent_workers is False
    assert train_loader("data.num_workers=0").persistent_workers is False  # no workers to keep
