"""Decoding image files with errors that name the file: numpy and pillow only, so `segkit.runtime`
(no torch) reads photos exactly as segkit's datasets do.

Real archives hold surprises: Pets has a GIF and an RGBA PNG named .jpg, some photos carry an EXIF
rotation. Images come back as H x W x 3 uint8 arrays, or a `DataError` is raised.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The file suffixes (any case) that segkit takes for images: in a folder dataset, and in a folder given to predict.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataError(Exception):
    """A dataset file that is missing or not what the reader expected; the message names the file."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder of the dataset layout does not exist."""


class InvalidFileError(DataError, ValueError):
    """A file exists but is empty, corrupt or holds something other than what was expected."""


def require_file(path: Path, what: str) -> None:
    """Raises a `DataError` that says what `path` is when it is not a non-empty file."""
    try:
        status = path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InvalidFileError(f"{path}: {what} is a loop of symbolic links, expected a file") from None
        if path.is_symlink():
            raise MissingFileError(
                f"{path}: {what} is a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise MissingFileError(f"{path}: {what} not found") from None
    if stat.S_ISDIR(status.st_mode):
        raise InvalidFileError(f"{path}: {what} is a folder, expected a file")
    if not stat.S_ISREG(status.st_mode):
        raise InvalidFileError(f"{path}: {what} is not a regular file (a device, pipe or socket)")
    if status.st_size == 0:
        raise InvalidFileError(f"{path}: {what} is an empty file (0 bytes)")


def open_image(path: Path, what: str) -> Image.Image:
    """The first frame of an image file, decoded fully now (so truncation shows here) and turned upright."""
    require_file(path, what)
    try:
        image = Image.open(path)
        image.load()
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise InvalidFileError(
            f"{path}: the {what} is too large to decode safely ({error}); if the file is trusted, raise "
            "PIL.Image.MAX_IMAGE_PIXELS, otherwise replace it (training skips it with "
            "data.on_bad_sample=skip)"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidFileError(f"{path}: cannot decode the {what} ({error})") from error


def read_image(path: Path) -> np.ndarray:
    """An RGB image, H x W x 3 uint8, from any format and mode PIL reads (grayscale, palette, RGBA, GIF)."""
    image = open_image(path, "image")
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # PIL's convert("RGB") clips 16-bit values at 255; rescale to 8 bits instead.
        gray = (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    # RGBA and transparent palette images: PIL drops alpha and keeps the stored colours.
    return np.asarray(image.convert("RGB"))
