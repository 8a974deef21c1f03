"""An exported segkit model in onnxruntime (`OnnxSegmenter`): the file's metadata (`segkit.runtime.metadata`)
gives the classes, colours, normalisation and training size, and images are preprocessed as `segkit predict`
does by default: resized (bilinear, cv2's sampling) to the training size, normalised, and the logits resized
back to the image's size; `tta="flip"` averages the softmax of the image and of its mirror, `tta_scales` the
softmax at several multiples of the training size (`segkit.runtime.tta`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segkit.runtime.metadata import ModelMetadata
from segkit.runtime.tta import build_tta
from segkit.utilities.extras import require

if TYPE_CHECKING:  # imported where a session starts: reading and writing files needs no onnxruntime
    import onnxruntime


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
