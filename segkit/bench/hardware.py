"""Where the bench runs and what it can measure there: the device, its peak FLOP/s, and peak memory."""

from __future__ import annotations

import gc
import os
import platform
from pathlib import Path
from typing import Any

import torch

from segkit.utilities.allocator import return_freed_memory

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: (bf16 and TF32 tensor cores, FP32). Matched in this
# order against torch.cuda.get_device_name(), so the more specific names come first.
PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100 NVL": (835.0, 418.0, 60.0),
    "H200 NVL": (835.0, 418.0, 60.0),
    "H100": (989.4, 494.7, 66.9),  # SXM
    "H200": (989.4, 494.7, 66.9),  # SXM, GH200 too
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.0, 183.0, 91.6),
    "L40": (181.0, 90.5, 90.5),
    "L4": (121.0, 60.0, 30.3),
}

class PeakMemory:
    """Peak memory of the code run inside it, above what was in use when it began, in MiB.

    On a GPU: `torch.cuda.max_memory_allocated` (tensors only, not the allocator's cache). On a CPU:
    the process's peak resident set (Linux `VmHWM`, reset through /proc/self/clear_refs) less its
    resident set at the start, after returning freed heap to the system; None where /proc has neither.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_peak"
        self.baseline = 0
        self.mib: float | None = None

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = _proc_status_bytes("VmRSS")
            _reset_peak_rss()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _proc_status_bytes("VmHWM")
        if peak is not None and self.baseline is not None:
            self.mib = (peak - self.baseline) / 2**20


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size (Linux >= 4.0)
    except OSError:
        pass


def release_memory() -> None:
    """Frees the last run's optimizer state (a Trainer's reference cycles hold it) and returns it to the
    system, so that the peak is that of one run, not of every run's freed memory."""
    gc.collect()
    return_freed_memory()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"bench.device={name!r}: expected auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench.device=cuda but torch sees no CUDA device")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def peak_tflops(gpu_name: str, precision: str) -> float | None:
    """The card's dense peak for the arithmetic the run uses: bf16 for bf16-mixed; TF32 for 32-bit
    when cuDNN may use it for convolutions (torch's default), else FP32. None for an unknown card."""
    for pattern, (bf16, tf32, fp32) in PEAK_TFLOPS.items():
        if pattern in gpu_name:
            if precision.startswith("bf16"):
                return bf16
            return tf32 if torch.backends.cudnn.allow_tf32 else fp32
    return None


def flop_utilisation(macs: int, images_per_s: float, peak: float, forward_passes: int) -> float:
    """Achieved FLOP/s over the card's peak TFLOP/s: 2 FLOPs per MAC, `forward_passes` per image."""
    return forward_passes * 2 * macs * images_per_s / (peak * 1e12)
