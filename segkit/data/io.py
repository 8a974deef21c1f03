"""Decoding mask and split files as the datasets ship them, with errors that name the file (images:
`segkit.runtime.images`).

Masks come as palette PNGs, 8- or 16-bit grayscale PNGs, RGB colour PNGs or MATLAB structs. Everything
here returns plain numpy arrays (raw masks H x W integers) or raises a `DataError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io

from segkit.runtime.images import InvalidFileError, MissingFileError, open_image, require_file


def read_mask_png(path: Path, colour_to_id: Mapping[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """The raw values of a mask PNG, H x W: palette indices, 8- or 16-bit gray levels, or, for an RGB mask
    and a `colour_to_id` map, the ids of its colours."""
    image = open_image(path, "mask")
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
