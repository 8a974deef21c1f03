"""Deployable ONNX files of a trained checkpoint: fp16 and static int8 versions of the fp32 export, the
metadata `segkit.runtime` reads, and an ONNX file wrapped as a network for segkit.eval's metrics.

int8 is onnxruntime's static quantization (`quantize_static`) in QDQ format, per-channel weights,
activations calibrated (min-max) on training images through the data pipeline's own preprocessing.
fp16 is onnxconverter-common's conversion, which keeps the inputs and outputs float32 for the user.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from hydra.utils import instantiate
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from segkit.data import SegmentationDataModule
from segkit.module import SegmentationModule
from segkit.runtime import PRECISIONS, ModelMetadata, inference_session, read_metadata


def training_datamodule(module: SegmentationModule, **overrides: Any) -> SegmentationDataModule:
    """The datamodule of a checkpoint's training config, with `overrides` of its keys (root=..., split=...),
    built but not set up (no file is read), normalising as training did."""
    data = instantiate({**module.segkit_config["data"], **overrides})
    data.use_normalisation_of(module.net)
    return data


def model_metadata(data: SegmentationDataModule, precision: str) -> ModelMetadata:
    """What `segkit.runtime` needs to run an export of a model trained on `data`."""
    if data.image_size is None:
        raise ValueError(f"{type(data).__name__} has no image_size: set data.image_size to export a deployable file")
    mean, std = data.normalisation
    return ModelMetadata(
        class_names=list(data.class_names),
        colormap=np.asarray(data.colormap).tolist(),
        mean=list(mean),
        std=list(std),
        image_size=list(data.image_size),
        size_divisor=data.val_collate.size_divisor,
        precision=precision,
        segkit_version=importlib.metadata.version("segkit"),
    )


def write_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Sets the `segkit.*` entries of the ONNX file's `metadata_props`, keeping any others."""
    model = onnx.load(str(path))
    props = {entry.key: entry.value for entry in model.metadata_props} | metadata.to_props()
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def calibration_batches(data: SegmentationDataModule, split: str, count: int) -> list[np.ndarray]:
    """`count` images of `split`, evenly spread over it, each a 1 x 3 x H x W float32 array preprocessed
    as validation does (its resize and normalisation, no augmentation)."""
    if split not in data.splits:
        raise ValueError(f"calibration={split!r} is not a split of {type(data).__name__}; expected one of "
                         f"{list(data.splits)}")
    if count < 1:
        raise ValueError(f"calibration_images must be >= 1, got {count}")
    reader = data.build_split(split)
    pipeline = data.pipeline(data.val_transforms)
    # Spread over the split: lists are often sorted by class (Pets: one breed, then the next).
    indices = np.unique(np.linspace(0, len(reader) - 1, min(count, len(reader))).round().astype(int))
    return [pipeline(image=reader[int(i)][0])["image"][None].numpy() for i in indices]


class _Batches(CalibrationDataReader):
    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch}


def quantize_int8(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static int8 of the fp32 file `source`: QDQ, per-channel weights, activations' ranges from `calibration`."""
    with tempfile.TemporaryDirectory() as scratch:
        # Shape inference and graph optimisation (BatchNorm folded into convolutions) before quantizing,
        # as onnxruntime recommends; per-channel weights then quantize the folded kernels.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(target), _Batches(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True)
    return target


def convert_fp16(source: Path, target: Path) -> Path:
    """The fp32 file `source` with float16 weights and arithmetic, float32 inputs and outputs."""
    onnx.save(float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))
    return target


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not an export precision; expected one of {list(PRECISIONS)}")


class OnnxNet(nn.Module):
    """An exported file as a network: N x 3 x H x W tensors in, onnxruntime's logits out, with the
    metadata's classes and normalisation (`input_mean`, `input_std`) for the datamodule to take."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = inference_session(self.path, threads)
        self.metadata = read_metadata(self.session, self.path)
        self.input_mean, self.input_std = tuple(self.metadata.mean), tuple(self.metadata.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"images": images.detach().cpu().float().numpy()})
        return torch.from_numpy(logits)


def onnx_module(path: str | Path, ignore_index: int = 255) -> SegmentationModule:
    """A module for Lightning's test loop (segkit.eval's metrics and loss) whose network is the ONNX file."""
    net = OnnxNet(path)
    names = net.metadata.class_names
    # No optimizer: the module is only evaluated.
    return SegmentationModule(net, num_classes=len(names), optimizer=None, ignore_index=ignore_index,
                              class_names=names).eval()
