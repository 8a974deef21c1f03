"""Decoding image, mask and split files as the datasets ship them, with errors that name the file.

Real archives hold surprises: Pets has a GIF and an RGBA PNG named .jpg, some photos carry an EXIF
rotation, masks come as palette PNGs, 8- or 16-bit grayscale PNGs or MATLAB structs. Everything here
returns plain numpy arrays (images H x W x 3 uint8, raw masks H x W integers) or raises a `DataError`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageOps, UnidentifiedImageError


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


def _open_image(path: Path, what: str) -> Image.Image:
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
    image = _open_image(path, "image")
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # PIL's convert("RGB") clips 16-bit values at 255; rescale to 8 bits instead.
        gray = (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    # RGBA and transparent palette images: PIL drops alpha and keeps the stored colours.
    return np.asarray(image.convert("RGB"))


def read_mask_png(path: Path, colour_to_id: Mapping[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """The raw values of a mask PNG, H x W: palette indices, 8- or 16-bit gray levels, or, for an RGB mask
    and a `colour_to_id` map, the ids of its colours."""
    image = _open_image(path, "mask")
    if image.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        # np.asarray of a palette image gives its indices, which is what palette masks store.
        return np.asarray(image)
    if image.mode == "RGB" and colour_to_id is not None:
        return colours_to_ids(np.asarray(image), colour_to_id, path)
    raise InvalidFileError(
        f"{path}: expected a single-channel class-id mask (palette, 8- or 16-bit grayscale PNG), got mode {image.mode}"
    )


def colours_to_ids(colour_mask: np.ndarray, colour_to_id: Mapping[tuple[int, int, int], int],
                   path: Path | str = "colour mask") -> np.ndarray:
    """An H x W x 3 colour mask as H x W ids; a colour outside `colour_to_id` is an error."""
    packed = _pack_rgb(colour_mask)
    colours, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
    known = {int(_pack_rgb(np.array(colour))): index for colour, index in colour_to_id.items()}
    unknown = [(c, int(n)) for c, n in zip(colours.tolist(), counts) if c not in known]
    if unknown:
        shown = ", ".join(f"{_unpack_rgb(c)} ({n} pixels)" for c, n in unknown[:5])
        palette = ", ".join(f"{tuple(colour)} -> {index}" for colour, index in colour_to_id.items())
        raise InvalidFileError(f"{path}: colours {shown} are not in the palette of {len(colour_to_id)} class colours; "
                               f"known colours (-> id): {palette}")
    ids = np.array([known[c] for c in colours.tolist()], dtype=np.uint8)
    return ids[inverse].reshape(packed.shape)


def _pack_rgb(colours: np.ndarray) -> np.ndarray:
    colours = colours.astype(np.int64)
    return (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]


def _unpack_rgb(packed: int) -> tuple[int, int, int]:
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255


def read_sbd_mat(path: Path) -> np.ndarray:
    """The class-id array of an SBD `cls/*.mat` file: field `Segmentation` of its struct `GTcls`."""
    require_file(path, "SBD mask")
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (ValueError, OSError, TypeError, NotImplementedError) as error:
        raise InvalidFileError(f"{path}: cannot read the MATLAB file ({error})") from error
    if "GTcls" not in mat:
        variables = sorted(k for k in mat if not k.startswith("__"))
        raise InvalidFileError(f"{path}: expected a struct GTcls, found variables {variables}")
    segmentation = getattr(mat["GTcls"], "Segmentation", None)
    if not isinstance(segmentation, np.ndarray) or segmentation.ndim != 2:
        raise InvalidFileError(f"{path}: expected GTcls.Segmentation to be an H x W array of class ids")
    return segmentation


def read_mask(path: Path, colour_to_id: Mapping[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """The raw values of a mask file, chosen by its suffix: SBD .mat, otherwise an image."""
    return read_sbd_mat(path) if path.suffix == ".mat" else read_mask_png(path, colour_to_id)


def read_split_file(path: Path) -> list[str]:
    """The sample ids of a split list: the first token of each line; blank and '#' lines are skipped.

    Pets lines read "Abyssinian_100 1 1 1", VOC and SBD lines just "2007_000032".
    """
    if not path.is_file():
        raise MissingFileError(f"{path}: split file not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not ids:
        raise InvalidFileError(f"{path}: split file lists no sample ids")
    duplicates = sorted(sample_id for sample_id, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise InvalidFileError(f"{path}: split file lists ids more than once: {duplicates[:10]}")
    return ids
