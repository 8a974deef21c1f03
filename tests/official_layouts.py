"""Writes small datasets in the exact layouts and formats of the official archives, for the reader tests."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from segkit.data.palettes import voc_palette

# The real two-breed Pets sample, beside the project: <repo>/../shared/data/oxford-iiit-pet.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# A small VOC layout: ids of both splits, in list order.
VOC_SPLITS = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000001"]}


def require_shared_pets() -> Path:
    """The shared data root; skips the test where the sample is absent, fails on CI where it must be."""
    if not (SHARED_DATA / "oxford-iiit-pet").is_dir():
        reason = f"the real Pets sample is not at {SHARED_DATA / 'oxford-iiit-pet'}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: it must be)")
        pytest.skip(reason)
    return SHARED_DATA


def sample_size(index: int) -> tuple[int, int]:
    """Different (height, width) per sample, none a multiple of 32, so padding shows."""
    return 40 + 7 * (index % 4), 50 + 5 * (index % 3)


def class_mask(index: int, num_classes: int, border: int | None = 255) -> np.ndarray:
    """Background 0 with a rectangle of class 1 + index % (num_classes - 1), ringed by `border`."""
    height, width = sample_size(index)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[8:-8, 10:-10] = 1 + index % (num_classes - 1)
    if border is not None:
        mask[8:-8, 10] = mask[8:-8, -11] = mask[8, 10:-10] = mask[-9, 10:-10] = border
    return mask


def write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_list(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def write_voc(root: Path, splits: dict[str, list[str]], mask_dir: str = "SegmentationClass",
              palette: bool = True) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 with JPEGs, palette PNG masks (255 on borders) and split lists; returns the masks."""
    base = root / "VOCdevkit" / "VOC2012"
    masks = {}
    for index, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        masks[sample_id] = class_mask(index, 21)
        write_image(base / "JPEGImages" / f"{sample_id}.jpg", masks[sample_id].shape, seed=index)
        mask = Image.fromarray(masks[sample_id], mode="P" if palette else "L")
        if palette:
            mask.putpalette(voc_palette())
        (base / mask_dir).mkdir(parents=True, exist_ok=True)
        mask.save(base / mask_dir / f"{sample_id}.png")
    for split, ids in splits.items():
        write_list(base / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    return masks


def write_sbd(root: Path, splits: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """benchmark_RELEASE/dataset with JPEGs, cls/*.mat GTcls structs (no borders, as SBD) and split lists."""
    base = root / "benchmark_RELEASE" / "dataset"
    masks = {}
    for index, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        masks[sample_id] = class_mask(index + 5, 21, border=None)
        write_image(base / "img" / f"{sample_id}.jpg", masks[sample_id].shape, seed=100 + index)
        (base / "cls").mkdir(parents=True, exist_ok=True)
        # Beside Segmentation, GTcls holds a 20 x 1 cell of sparse boundary maps and the classes present.
        boundaries = np.empty((20, 1), dtype=object)
        for k in range(20):
            boundaries[k, 0] = scipy.sparse.csc_matrix(masks[sample_id] == k + 1, dtype=np.uint8)
        present = np.unique(masks[sample_id][masks[sample_id] > 0]).astype(np.uint8)
        scipy.io.savemat(base / "cls" / f"{sample_id}.mat", {"GTcls": {
            "Segmentation": masks[sample_id], "Boundaries": boundaries, "CategoriesPresent": present}})
    for split, ids in splits.items():
        write_list(base / f"{split}.txt", ids)
    return masks


def write_pets(root: Path, splits: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """oxford-iiit-pet with JPEGs, mode-L trimaps (1 pet, 2 background, 3 border) and split lists;
    returns the trimaps as stored (values 1..3)."""
    base = root / "oxford-iiit-pet"
    trimaps = {}
    for index, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        # class_mask's 0 background, 1 object, 9 border -> the trimap's 2, 1, 3.
        trimaps[sample_id] = np.array([2, 1, 0, 0, 0, 0, 0, 0, 0, 3], dtype=np.uint8)[class_mask(index, 2, border=9)]
        write_image(base / "images" / f"{sample_id}.jpg", trimaps[sample_id].shape, seed=200 + index)
        (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
        Image.fromarray(trimaps[sample_id], mode="L").save(base / "annotations" / "trimaps" / f"{sample_id}.png")
    for split, ids in splits.items():
        write_list(base / "annotations" / f"{split}.txt", [f"{i} {1 + n % 2} {1 + n % 2} 1" for n, i in enumerate(ids)])
    return trimaps


def write_decompression_bomb(path: Path, side: int = 20000) -> None:
    """A PNG that declares side x side RGB pixels (1.2 GB decoded for 20000) and holds none: PIL refuses it when
    opening, before decoding, so a few bytes stand in for the 20000 x 20000 file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlacing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
