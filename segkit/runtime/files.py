"""Image files in, mask files out, for every way of predicting (segkit predict, the ONNX runtime): which files
an input names, where their masks go, and that no output replaces an input."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.runtime.images import IMAGE_SUFFIXES, read_image, require_file


def list_images(entries: str | Path | Sequence[str | Path]) -> list[Path]:
    """The image files named by `entries`: a file, a folder (its files with an image suffix, any case,
    sorted, not its subfolders) or a list of either."""
    entries = [entries] if isinstance(entries, (str, Path)) else list(entries)
    if not entries:
        raise ValueError("input=[] names no images")
    files: list[Path] = []
    for entry in map(Path, entries):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"input={entry}: the folder holds no image files ({' '.join(IMAGE_SUFFIXES)})")
            files += found
        elif entry.is_file():
            files.append(entry)
        elif entry.is_symlink() or entry.exists():
            require_file(entry, "input")  # says what it is instead: a link loop, a link to nothing, a pipe
        else:
            raise FileNotFoundError(f"input={entry}: no such file or folder")
    return files


def output_paths(inputs: Sequence[Path], output: Path, overlays: bool) -> list[tuple[Path, Path | None]]:
    """Per input, its mask's path and its overlay's (or None); names that would be written twice, or
    over an input, are an error."""
    planned = [(output / f"{path.stem}.png", output / f"{path.stem}_overlay.png" if overlays else None)
               for path in inputs]
    targets = [target for pair in planned for target in pair if target is not None]
    clashes = sorted(str(target) for target, count in Counter(targets).items() if count > 1)
    if clashes:
        raise ValueError(f"{clashes[0]} would be written for more than one input: inputs with the same file stem "
                         f"(or a stem ending in _overlay) need separate runs or output folders")
    overwritten = overwritten_inputs(targets, inputs)
    if overwritten:
        raise ValueError(f"output={output} would overwrite the input {overwritten[0]}; choose another output folder")
    return planned


def write_mask(mask: np.ndarray, colormap: np.ndarray, path: Path) -> Path:
    """H x W class ids as a palette PNG: pixel values are the ids, shown in the dataset's colours."""
    image = Image.fromarray(mask)
    image.putpalette(colormap.ravel().tolist())  # an 8-bit image with a palette becomes mode "P"
    image.save(path)
    return path


def write_overlay(image: np.ndarray, mask: np.ndarray, colormap: np.ndarray, alpha: float, path: Path) -> Path:
    """The image blended with its mask's colours, `alpha` the colours' weight."""
    blended = image.astype(np.float32) * (1 - alpha) + colormap[mask].astype(np.float32) * alpha
    Image.fromarray(blended.round().astype(np.uint8)).save(path)
    return path


def segment_files(segment: Callable[[np.ndarray], np.ndarray], colormap: np.ndarray,
                  inputs: str | Path | Sequence[str | Path], output: str | Path, overlays: bool = True,
                  overlay_alpha: float = 0.5) -> list[Path]:
    """Writes the mask (and overlay) of every image `inputs` names into `output`, `segment` mapping an
    image to its class ids; returns the files written, in input order. Names are checked before any
    image is read, so a clash loses no work."""
    if not 0 <= overlay_alpha <= 1:
        raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
    files = list_images(inputs)
    output = Path(output)
    planned = output_paths(files, output, overlays)
    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    start = time.perf_counter()
    for path, (mask_path, overlay_path) in zip(files, planned):
        image = read_image(path)
        mask = segment(image)
        written.append(write_mask(mask, colormap, mask_path))
        if overlay_path is not None:
            written.append(write_overlay(image, mask, colormap, overlay_alpha, overlay_path))
    seconds = time.perf_counter() - start
    print(f"segkit predict: {len(files)} images in {seconds:.1f} s ({seconds / len(files):.3f} s per image), "
          f"masks{' and overlays' if overlays else ''} in {output}")
    return written


def overwritten_inputs(outputs: Iterable[Path], inputs: Iterable[Path]) -> list[Path]:
    """The `inputs` that writing `outputs` would replace: the same file under any name, through symbolic
    or hard links (same device and inode), as `os.path.samefile` tells, for paths that may not exist yet."""
    by_identity = {identity: path for path in inputs if (identity := _file_identity(path)) is not None}
    return sorted({by_identity[identity] for identity in map(_file_identity, outputs) if identity in by_identity})


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()  # follows symbolic links
    except OSError:  # not there yet (or a broken link, a link loop): nothing to replace
        return None
    return status.st_dev, status.st_ino
