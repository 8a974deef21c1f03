"""Deployable ONNX files of a trained checkpoint (`export`, the work of segkit.export): the fp32 export,
fp16 and static int8 versions of it, and the metadata `segkit.runtime` reads. Needs segkit's `export` extra.

SegNet's `max_unpool2d` has no ONNX export in torch (pytorch/pytorch#25088, #85388); segkit's unpooling
is a scatter (`segkit.models.segnet.max_unpool2d`), which torch's exporter translates, so every segkit
model exports.

int8 is onnxruntime's static quantization (`quantize_static`) in QDQ format, per-channel weights,
activations calibrated (min-max) on training images through the data pipeline's own preprocessing.
fp16 is onnxconverter-common's conversion, which keeps the inputs and outputs float32 for the user.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.data import SegmentationDataModule
from segkit.engine.loading import load_module, training_datamodule
from segkit.models.fusion import fold_batchnorm
from segkit.runtime.files import overwritten_inputs
from segkit.runtime.metadata import PRECISIONS, ModelMetadata
from segkit.runtime.session import inference_session
from segkit.utilities.extras import require

onnx = require("onnx", "exporting to ONNX")
require("onnxscript", "exporting to ONNX")  # torch's ONNX exporter imports it
float16 = require("onnxconverter_common.float16", "the fp16 export")
quantization = require("onnxruntime.quantization", "the int8 export")
quant_pre_process = require("onnxruntime.quantization.shape_inference", "the int8 export").quant_pre_process

FORMATS = ("onnx",)
# What the int8 export quantizes: the convolution blocks (MobileNetV2's residual Add, ReLU6 as Clip) and the
# pooling. The unpooling's Where and the window comparisons stay float: as QLinearWhere onnxruntime ran them
# slower than dequantizing (docs/export.md).
INT8_OPS = ["Conv", "MaxPool", "Add", "Relu", "Clip"]
EXPORTERS = ("dynamo", "torchscript")


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


class _Batches(quantization.CalibrationDataReader):
    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch}


def quantize_int8(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static int8 of the fp32 file `source`: QDQ, per-channel int8 weights, uint8 activations whose ranges come
    from `calibration`."""
    with tempfile.TemporaryDirectory() as scratch:
        # Shape inference and graph optimisation before quantizing, as onnxruntime recommends.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        # uint8 activations with int8 weights (U8S8), the x86 format of onnxruntime's int8 kernels. With int8
        # activations (quantize_static's default) every convolution whose output also feeds a float operation
        # (the unpooling's, the pooling's) stayed a float Conv between Dequantize and Quantize nodes: 7 of the 40
        # of dsc_segnet, the widest ones, and the int8 file ran no faster than fp32 (docs/export.md).
        quantization.quantize_static(str(prepared), str(target), _Batches(calibration),
                                     quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                     activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8, op_types_to_quantize=INT8_OPS)
    return target


def convert_fp16(source: Path, target: Path) -> Path:
    """The fp32 file `source` with float16 weights and arithmetic, float32 inputs and outputs."""
    # ConstantOfShape (the zeros the unpooling scatters into, in the dynamo graph) stays float32 with a
    # cast after it: the converter marks its output float16 but leaves its value float32, which
    # onnxruntime refuses to load.
    blocked = [*float16.DEFAULT_OP_BLOCK_LIST, "ConstantOfShape"]
    model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, op_block_list=blocked)
    onnx.save(model, str(target))
    return target


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not an export precision; expected one of {list(PRECISIONS)}")


def export_onnx(
    net: nn.Module, path: Path, example_size: tuple[int, int], exporter: str = "dynamo", opset: int = 18
) -> Path:
    """Writes `net` (in eval mode) to `path` with batch, height and width left dynamic.

    `exporter="dynamo"` is torch's default, `torch.export`-based exporter. `"torchscript"` is its
    legacy tracer, deprecated by torch but many times faster to run: same graph, same numbers, and the
    test suite uses it to check every model quickly.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r} is not an ONNX exporter; expected one of {list(EXPORTERS)}")
    net = net.eval()
    example = torch.zeros(1, getattr(net, "in_channels", 3), *example_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {"input_names": ["images"], "output_names": ["logits"]}
    if exporter == "dynamo":
        min_size = getattr(net, "min_size", 1)
        dynamic = {
            0: torch.export.Dim("batch", min=1, max=1024),
            2: torch.export.Dim("height", min=min_size, max=8192),
            3: torch.export.Dim("width", min=min_size, max=8192),
        }
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=opset, dynamic_shapes=(dynamic,),
                                    verbose=False, **names)
        program.save(str(path))
    else:
        axes = {0: "batch", 2: "height", 3: "width"}
        with warnings.catch_warnings():
            # Its deprecation notice, and the tracer's note that the input-size check becomes a constant.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17,
                              dynamic_axes={"images": axes, "logits": axes}, **names)
    return path


def onnx_max_abs_difference(net: nn.Module, path: Path, shapes: list[tuple[int, ...]], seed: int = 0) -> float:
    """The largest |ONNX Runtime - PyTorch| over random inputs of the given N x C x H x W shapes."""
    session = inference_session(path)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    net = net.eval()
    for shape in shapes:
        images = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = net(images).numpy()
        (actual,) = session.run(["logits"], {"images": images.numpy()})
        if actual.shape != expected.shape:
            raise RuntimeError(f"{path}: ONNX output shape {actual.shape} != PyTorch {expected.shape} for input {shape}")
        worst = max(worst, float(np.abs(actual - expected).max()))
    return worst


def export(ckpt_path: str | Path, output: str | Path | None = None, fmt: str = "onnx", precision: str = "fp32",
           calibration: str = "train", calibration_images: int = 32, data_root: str | Path | None = None,
           example_size: tuple[int, int] = (64, 64), check: bool = True, exporter: str = "dynamo",
           trusted_targets: Sequence[str] = ()) -> dict[str, Any]:
    """Exports the checkpoint's network (built only from segkit's targets and `trusted_targets`) at `precision`
    (fp32, fp16 or int8, int8 calibrated on `calibration_images` images of the split `calibration` read from
    `data_root`, default the training's data.root) with the metadata `segkit.runtime` needs, to `output`
    (default beside the checkpoint), never over the checkpoint itself; `check` compares it with PyTorch in
    onnxruntime."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not an export format; expected one of {list(FORMATS)}")
    check_precision(precision)
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    path = Path(output) if output else Path(ckpt_path).with_suffix(suffix)
    if overwritten_inputs([path], [Path(ckpt_path)]):
        raise ValueError(f"output={path} is the checkpoint ckpt_path={ckpt_path} itself: exporting would replace it; "
                         "choose another output")
    module = load_module(ckpt_path, trusted_targets)
    data = training_datamodule(module, **({} if data_root is None else {"root": str(data_root)}))
    # channels_last was a training-speed choice; the exported graph takes plain NCHW tensors. The file holds the
    # network with BatchNorm folded into its convolutions, as a runtime runs it.
    net = module.net.to(memory_format=torch.contiguous_format)
    size = tuple(max(s, getattr(net, "min_size", 1)) for s in example_size)
    report: dict[str, Any] = {"checkpoint": str(ckpt_path), "onnx": str(path), "precision": precision,
                              "exporter": exporter}
    if precision == "int8":  # read first: a bad split or count fails before the export's work
        calibration_inputs = calibration_batches(data, calibration, calibration_images)
        report["calibration"] = {"split": calibration, "images": len(calibration_inputs)}
    folded = fold_batchnorm(net)
    if precision == "fp32":
        export_onnx(folded, path, size, exporter)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            fp32 = export_onnx(folded, Path(scratch) / "fp32.onnx", size, exporter)
            if precision == "fp16":
                convert_fp16(fp32, path)
            else:
                quantize_int8(fp32, path, calibration_inputs)
    write_metadata(path, model_metadata(data, precision))
    report["bytes"] = path.stat().st_size
    if check:  # against the checkpoint's own network: folding and quantization both in the difference
        odd = tuple(s + 17 for s in size)  # another batch size and odd sizes: the dynamic axes must hold
        report["max_abs_difference"] = onnx_max_abs_difference(net, path, [(1, net.in_channels, *size),
                                                                           (2, net.in_channels, *odd)])
    return report
