"""Running an exported segkit model with onnxruntime alone: this module imports numpy, pillow and
onnxruntime (and the standard library), never torch or Lightning, so a deployment installs just those.

    python -m segkit.runtime model.int8.onnx photos/ --output masks/   # with torch: segkit.predict onnx_path=...

`segkit.export` writes what inference needs into the file's metadata (`metadata_props`, keys
`segkit.*`, JSON values): the classes and their colours, the input normalisation, the training image
size, the size divisor, the precision and segkit's version. `OnnxSegmenter` preprocesses as
`segkit.predict` does by default: the image is resized (bilinear, cv2's sampling) to the training size,
normalised, and the logits are resized back to the image's size; `tta="flip"` averages the softmax of
the image and of its mirror, `tta_scales` the softmax at several multiples of the training size.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from segkit.extras import require
from segkit.image_files import read_image, require_file
from segkit.trust import overwritten_inputs

if TYPE_CHECKING:  # imported where a session starts: reading and writing files needs no onnxruntime
    import onnxruntime

METADATA_PREFIX = "segkit."
PRECISIONS = ("fp32", "fp16", "int8")
TTA_MODES = (None, "flip")


def check_tta(tta: str | None) -> str | None:
    """`tta` if it names a test-time augmentation of TTA_MODES; else a ValueError that lists them."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r} is not a test-time augmentation; expected one of {list(TTA_MODES)}")
    return tta


def check_tta_scales(scales: Sequence[float] | None) -> tuple[float, ...]:
    """`tta_scales` as a tuple of distinct positive factors ((1.0,) for None); else a ValueError naming the value."""
    if scales is None:
        return (1.0,)
    expected = "expected a list of distinct positive scale factors, e.g. [0.75, 1.0]"
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
        raise ValueError(f"tta_scales={scales!r}: {expected}")
    if any(isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf")
           for scale in scales):
        raise ValueError(f"tta_scales={list(scales)}: {expected}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"tta_scales={list(scales)} names a scale twice: {expected}")
    return tuple(float(scale) for scale in scales)


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views whose class probabilities are averaged at test time (mmseg's "aug test"): the network's input
    resized by each of `scales`, and with `flip` the mirror image of each, its prediction flipped back. segkit's
    networks take any input size (SegNet unpools to the size before each pooling).

    Written here rather than taken from ttach: the same views must run in onnxruntime without torch."""

    __test__ = False  # a class named Test* that pytest must not collect

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def views(self) -> list[tuple[float, bool]]:
        """(scale, mirrored) of every view, in order."""
        return [(scale, mirrored) for scale in self.scales for mirrored in ((False, True) if self.flip else (False,))]

    @staticmethod
    def size(size: Sequence[int], scale: float) -> tuple[int, int]:
        """The (height, width) the network sees at `scale` for an input of `size`: each side times the scale,
        rounded."""
        height, width = (max(1, round(side * scale)) for side in size)
        return height, width

    def mean(self, view: Callable[[tuple[int, int], bool], Any], size: Sequence[int]) -> Any:
        """The mean over the views of `view(the size the network sees, mirrored)`, for an input of `size`: the
        class probabilities each caller computes its own way (torch batches, a photo, onnxruntime)."""
        views = self.views()
        return sum(view(self.size(size, scale), mirrored) for scale, mirrored in views) / len(views)

    def overrides(self) -> str:
        """The command-line settings that select it, e.g. `tta=flip tta_scales=[0.75,1]`."""
        scales = f"tta_scales=[{','.join(f'{scale:g}' for scale in self.scales)}]" if self.scales != (1.0,) else ""
        return " ".join(setting for setting in ("tta=flip" if self.flip else "", scales) if setting)


def build_tta(tta: str | None, scales: Sequence[float] | None = None) -> TestTimeAugmentation | None:
    """The test-time augmentation that `tta` (None or "flip") and `tta_scales` describe; None for a single view."""
    flip = check_tta(tta) == "flip"
    scales = check_tta_scales(scales)
    if not flip and scales == (1.0,):
        return None
    return TestTimeAugmentation(flip, scales)


def tta_settings(tta: TestTimeAugmentation | None) -> dict[str, str | list[float] | None]:
    """The `tta` and `tta_scales` that `build_tta` makes `tta` from, as runs and evaluations record them."""
    return {"tta": "flip" if tta is not None and tta.flip else None,
            "tta_scales": list(tta.scales) if tta is not None else None}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported file carries besides its graph; each field is the metadata key `segkit.<field>`."""

    class_names: list[str]
    colormap: list[list[int]]  # an RGB colour per class id (VOC-style datasets: 256 of them)
    mean: list[float]  # per channel, on the 0..1 scale, as training normalised
    std: list[float]
    image_size: list[int]  # [height, width] of training, what the network sees at inference
    size_divisor: int  # the network's total stride: validation pads whole images to a multiple of it
    precision: str
    segkit_version: str

    def to_props(self) -> dict[str, str]:
        return {METADATA_PREFIX + name: json.dumps(value) for name, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | Path) -> ModelMetadata:
        """The metadata of an ONNX file's `metadata_props`; `source` names the file in errors."""
        names = [field.name for field in fields(cls)]
        missing = [METADATA_PREFIX + name for name in names if METADATA_PREFIX + name not in props]
        if missing:
            raise ValueError(f"{source}: the ONNX metadata lacks {missing}; export the checkpoint with "
                             f"`python -m segkit.export`, which writes them")
        values = {}
        for name in names:
            try:
                values[name] = json.loads(props[METADATA_PREFIX + name])
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}: metadata {METADATA_PREFIX}{name} is not JSON ({error})") from error
        metadata = cls(**values)
        metadata._check(source)
        return metadata

    def _check(self, source: str | Path) -> None:
        problems = []
        if len(self.colormap) < len(self.class_names):
            problems.append(f"{len(self.colormap)} colours for {len(self.class_names)} classes")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean {self.mean} and std {self.std} must be 3 values each, std > 0")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size {self.image_size} must be [height, width]")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if problems:
            raise ValueError(f"{source}: invalid segkit metadata: {'; '.join(problems)}")


def _sampling(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two source positions it blends and the second one's weight."""
    position = np.clip((np.arange(target) + 0.5) * (source / target) - 0.5, 0, source - 1)
    low = np.floor(position).astype(np.intp)
    return low, np.minimum(low + 1, source - 1), (position - low).astype(np.float32)


def resize_bilinear(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """An H x W x C float array resized to `size` (height, width), sampled at pixel centres without
    antialiasing: cv2's INTER_LINEAR (training's resize) and torch's bilinear `interpolate` with
    `align_corners=False` (the logits' resize in segkit.predict)."""
    # Written here because the runtime has neither cv2 nor torch, and PIL's bilinear resize antialiases
    # when it shrinks, which training did not.
    top, bottom, down = _sampling(array.shape[0], size[0])
    left, right, across = _sampling(array.shape[1], size[1])
    rows = array[top] + (array[bottom] - array[top]) * down[:, None, None]
    return rows[:, left] + (rows[:, right] - rows[:, left]) * across[None, :, None]


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)


def inference_session(path: str | Path, threads: int | None = None,
                      spinning: bool = True) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session of the ONNX file `path`; `threads`: intra-op threads (None: onnxruntime's
    default); `spinning=False` stops its idle threads from spinning, which would take the CPU from
    other work in the process (PyTorch timed in turn with it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"onnx_path={path}: no such ONNX file")
    onnxruntime = require("onnxruntime", "running an ONNX file")
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_metadata(session: onnxruntime.InferenceSession, source: str | Path) -> ModelMetadata:
    return ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, source)


class OnnxSegmenter:
    """An exported segkit model with its training's preprocessing: H x W x 3 uint8 RGB images in, class
    probabilities or ids at the image's own size out. `image_size` (height, width) overrides the
    training size the network sees."""

    def __init__(self, path: str | Path, image_size: Sequence[int] | None = None, tta: str | None = None,
                 threads: int | None = None, tta_scales: Sequence[float] | None = None) -> None:
        self.tta = build_tta(tta, tta_scales)  # checked before the file is opened
        self.path = Path(path)
        self.session = inference_session(self.path, threads)
        self.metadata = read_metadata(self.session, self.path)
        image_size = image_size or self.metadata.image_size
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be [height, width], got {list(image_size)}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.colormap = np.asarray(self.metadata.colormap, dtype=np.uint8)
        self.mean = np.asarray(self.metadata.mean, dtype=np.float32) * 255
        self.std = np.asarray(self.metadata.std, dtype=np.float32) * 255

    def preprocess(self, image: np.ndarray, size: Sequence[int] | None = None) -> np.ndarray:
        """1 x 3 x h x w float32 network input: resized to `size` (default `image_size`) and normalised, as
        training did."""
        # Rounded back to uint8 levels, as cv2 resizes uint8 images in the training pipeline.
        resized = resize_bilinear(image.astype(np.float32), size or self.image_size).round().clip(0, 255)
        return ((resized - self.mean) / self.std).transpose(2, 0, 1)[None].astype(np.float32)

    def logits(self, image: np.ndarray, size: Sequence[int] | None = None) -> np.ndarray:
        """C x H x W logits of `image` at its own size (H x W), the network fed it at `size` (default
        `image_size`), without test-time augmentation."""
        (logits,) = self.session.run(["logits"], {"images": self.preprocess(image, size)})
        return resize_bilinear(logits[0].transpose(1, 2, 0), image.shape[:2]).transpose(2, 0, 1)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """C x H x W class probabilities of `image`, averaged over the test-time augmentation's views."""
        if self.tta is None:
            return softmax(self.logits(image))
        return self.tta.mean(partial(self._view_probabilities, image), self.image_size)

    def _view_probabilities(self, image: np.ndarray, size: tuple[int, int], mirrored: bool) -> np.ndarray:
        if not mirrored:
            return softmax(self.logits(image, size))
        return softmax(self.logits(np.ascontiguousarray(image[:, ::-1]), size))[:, :, ::-1]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """H x W uint8 class ids of `image`."""
        return self.probabilities(image).argmax(axis=0).astype(np.uint8)


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m segkit.runtime", description="Masks and overlays of images "
                                     "from a segkit ONNX export, without torch.")
    parser.add_argument("onnx_path", help="a file written by python -m segkit.export")
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--output", default="masks", help="folder for <stem>.png and <stem>_overlay.png")
    parser.add_argument("--no-overlays", dest="overlays", action="store_false")
    parser.add_argument("--overlay-alpha", type=float, default=0.5)
    parser.add_argument("--tta", choices=["flip"], default=None)
    parser.add_argument("--tta-scales", type=float, nargs="+", default=None, metavar="SCALE",
                        help="also average the prediction at these multiples of the input size, e.g. 0.75 1")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    segmenter = OnnxSegmenter(args.onnx_path, tta=args.tta, threads=args.threads, tta_scales=args.tta_scales)
    segment_files(segmenter, segmenter.colormap, args.inputs, args.output, args.overlays, args.overlay_alpha)


if __name__ == "__main__":
    main()
