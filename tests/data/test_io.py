"""Decoding real files as they are (segkit/image_files.py, segkit/data/io.py, segkit/data/palettes.py)."""

import numpy as np
import pytest
from PIL import Image

from segkit.data import InvalidFileError
from segkit.data.io import read_mask_png
from segkit.data.palettes import voc_colours_to_ids, voc_ids_to_colours, voc_palette
from segkit.runtime.images import read_image


def test_grayscale_palette_rgba_gif_and_16_bit_images_decode_to_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.jpg", quality=100)
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "animation.jpg", format="GIF")  # a GIF named .jpg
    Image.fromarray(np.dstack([pixels, np.full((20, 30), 7, np.uint8)])).save(tmp_path / "rgba.jpg", format="PNG")
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
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
