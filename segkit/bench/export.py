"""What each export precision of a checkpoint costs and gives: file size, CPU latency at batch 1 and
throughput in onnxruntime against PyTorch eager fp32 (same threads, calls taking turns in one process): as
segkit.eval and segkit.predict run it (BatchNorm folded) and the network as it trained (unfolded); and the mIoU of
each file on a split of the training data. `benchmarks/export_precisions.py` prints the table.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from segkit.engine.loading import load_module, training_datamodule
from segkit.engine.module import SegmentationModule
from segkit.engine.onnx_net import onnx_module
from segkit.runtime.session import inference_session
from segkit.tasks.export import export


def median_seconds(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each callable; they take turns, so a busy machine slows all alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def split_miou(module: SegmentationModule, data: L.LightningDataModule) -> float:
    """mIoU of `module` on the datamodule's `split`, through Lightning's test loop as segkit.eval runs it."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return trainer.test(module, datamodule=data, verbose=False)[0]["test/miou"]


def measure_precisions(ckpt_path: str | Path, folder: str | Path, precisions: Sequence[str] = ("fp32", "fp16", "int8"),
                       threads: int = 2, batch_size: int = 16, rounds: int = 20, warmup: int = 3,
                       miou_split: str | None = "test", data_root: str | Path | None = None,
                       exporter: str = "torchscript", calibration_images: int = 32) -> list[dict[str, Any]]:
    """One row per precision: the export's bytes, its onnxruntime latency (batch 1, ms) and images/s (at
    `batch_size`) next to PyTorch eager's on the same inputs and `threads`, and its mIoU on `miou_split`
    of the training data (None: not measured, e.g. for untrained weights) next to the checkpoint's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # PyTorch as segkit.eval and segkit.predict run it: in the memory format the checkpoint trained in.
    module = load_module(ckpt_path)
    folded = copy.deepcopy(module).fold_batchnorm()  # as segkit.eval and segkit.predict run it; `module` unfolded
    root = {} if data_root is None else {"root": str(data_root)}
    height, width = training_datamodule(module, **root).image_size
    torch.set_num_threads(threads)
    generator = np.random.default_rng(0)
    single = generator.standard_normal((1, 3, height, width), dtype=np.float32)
    batch = generator.standard_normal((batch_size, 3, height, width), dtype=np.float32)
    test_data = None
    pytorch_miou = None
    if miou_split is not None:
        test_data = training_datamodule(module, split=miou_split, **root)
        pytorch_miou = split_miou(module, test_data)
    rows = []
    for precision in precisions:
        report = export(ckpt_path, folder / f"{Path(ckpt_path).stem}.{precision}.onnx", precision=precision,
                        calibration_images=calibration_images, data_root=data_root, exporter=exporter, check=False)
        session = inference_session(report["onnx"], threads, spinning=False)

        def timed(inputs: np.ndarray) -> dict[str, float]:
            tensor = torch.from_numpy(inputs)
            with torch.inference_mode():
                return median_seconds({"onnxruntime": lambda: session.run(None, {"images": inputs}),
                                       "pytorch": lambda: folded(tensor), "pytorch_unfolded": lambda: module(tensor)},
                                      rounds, warmup)

        latency, throughput = timed(single), timed(batch)
        rows.append({
            "precision": precision,
            "bytes": report["bytes"],
            "latency_ms": 1000 * latency["onnxruntime"],
            "pytorch_latency_ms": 1000 * latency["pytorch"],
            "pytorch_unfolded_latency_ms": 1000 * latency["pytorch_unfolded"],
            "images_per_s": batch_size / throughput["onnxruntime"],
            "pytorch_images_per_s": batch_size / throughput["pytorch"],
            "pytorch_unfolded_images_per_s": batch_size / throughput["pytorch_unfolded"],
            "miou": None if test_data is None else split_miou(onnx_module(report["onnx"]), test_data),
            "pytorch_miou": pytorch_miou,
            "image_size": [height, width],
            "batch_size": batch_size,
            "threads": threads,
        })
    return rows


def format_rows(model: str, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table rows: model, precision, MB, batch-1 latency of ORT, PyTorch folded and unfolded, ORT's over
    each, images/s ORT / PyTorch folded / unfolded, mIoU."""
    lines = []
    for row in rows:
        miou = "-" if row["miou"] is None else f"{row['miou']:.4f} (PyTorch {row['pytorch_miou']:.4f})"
        lines.append(
            f"| {model} | {row['precision']} | {row['bytes'] / 1e6:.2f} | {row['latency_ms']:.1f} / "
            f"{row['pytorch_latency_ms']:.1f} / {row['pytorch_unfolded_latency_ms']:.1f} | "
            f"{row['latency_ms'] / row['pytorch_latency_ms']:.2f} / "
            f"{row['latency_ms'] / row['pytorch_unfolded_latency_ms']:.2f} | {row['images_per_s']:.1f} / "
            f"{row['pytorch_images_per_s']:.1f} / {row['pytorch_unfolded_images_per_s']:.1f} | {miou} |"
        )
    return lines


TABLE_HEADER = [
    "| model | precision | MB | latency ms, batch 1: ORT / PyTorch / PyTorch unfolded | ORT over PyTorch / unfolded "
    "| images/s: ORT / PyTorch / unfolded | test mIoU |",
    "|---|---|---|---|---|---|---|",
]
