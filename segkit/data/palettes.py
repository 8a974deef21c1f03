"""Class names and colour palettes of the datasets, and VOC colour masks to class ids and back."""

from __future__ import annotations

import numpy as np

from segkit.data.io import colours_to_ids

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

PETS_CLASS_NAMES = {"trimap": ("pet", "background", "border"), "binary": ("pet", "background")}


def voc_colormap(num_colours: int = 256) -> np.ndarray:
    """The PASCAL VOC devkit's colour map (its `labelcolormap.m`), num_colours x 3 uint8.

    Bits 0, 1, 2 of the index go, three at a time, from the most significant bit down, into red, green
    and blue: 1 is (128, 0, 0), 15 (person) is (192, 128, 128), 255 (the ignore border) is (224, 224, 192).
    """
    colormap = np.zeros((num_colours, 3), dtype=np.uint8)
    for index in range(num_colours):
        value, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colormap[index] = colour
    return colormap


VOC_COLORMAP = voc_colormap()
# Ignored pixels (VOC's object borders, padding) are drawn in VOC's border colour in every dataset.
IGNORE_COLOUR = VOC_COLORMAP[255]

# Pets trimaps and the shapes data (pet or object, background, border) have no official colours: a
# black background, so overlays leave the scene dark around a bright pet and its white border.
TRIMAP_COLORMAP = np.array([[255, 128, 0], [0, 0, 0], [255, 255, 255]], dtype=np.uint8)


def voc_palette() -> list[int]:
    """VOC's colour map flattened as `PIL.Image.putpalette` takes it."""
    return VOC_COLORMAP.ravel().tolist()


def voc_colour_to_id(ignore_index: int = 255) -> dict[tuple[int, int, int], int]:
    """The colour of each VOC class, and of the border, to its class id (the border to `ignore_index`)."""
    colours = {tuple(int(v) for v in VOC_COLORMAP[i]): i for i in range(len(VOC_CLASS_NAMES))}
    colours[tuple(int(v) for v in VOC_COLORMAP[255])] = ignore_index
    return colours


def voc_colours_to_ids(colour_mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """An H x W x 3 VOC colour mask as H x W uint8 class ids; the border colour becomes `ignore_index`."""
    return colours_to_ids(colour_mask, voc_colour_to_id(ignore_index))


def voc_ids_to_colours(ids: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """H x W class ids as an H x W x 3 VOC colour mask; `ignore_index` gets the border colour."""
    return ids_to_colours(ids, VOC_COLORMAP, ignore_index)


def ids_to_colours(ids: np.ndarray, colormap: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """H x W class ids as H x W x 3 uint8 colours: class i gets colormap[i], `ignore_index` VOC's border
    colour (cream)."""
    lookup = np.zeros((max(len(colormap), ignore_index + 1), 3), dtype=np.uint8)
    lookup[: len(colormap)] = colormap
    lookup[ignore_index] = IGNORE_COLOUR
    valid = (ids >= 0) & ((ids < len(colormap)) | (ids == ignore_index))
    if not valid.all():
        raise ValueError(f"class ids must lie in 0..{len(colormap) - 1} or be {ignore_index} (ignored), "
                         f"got {sorted(set(np.unique(ids[~valid]).tolist()))}")
    return lookup[ids.astype(np.intp)]
