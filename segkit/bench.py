"""python -m segkit.bench: speed and memory of each model, and segkit's overhead against a plain loop.

    python -m segkit.bench                                   # every model config, CPU or GPU
    python -m segkit.bench model=dsc_segnet bench.image_size=[320,320] bench.batch_size=32
    python -m segkit.bench bench.options=[default,compile,nchw]

Per model (and per speed option of `bench.options`): parameters, MACs, training images/s through the
real `SegmentationModule.training_step` and Lightning `Trainer.fit`, the same steps in the hand-written
loop of `benchmarks/plain_loop.py` (same network, tensors, loss and optimizer, alternated with the
Trainer's in this process) and their ratio, inference images/s and batch-1 latency, peak memory, and on
a GPU the model FLOP utilisation. Then the configured data's train loader alone. Everything goes to
bench.json and bench.md in the run directory.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import importlib.util
import itertools
import json
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, IterableDataset

from segkit.config import CONFIG_DIR, to_plain
from segkit.models import count_parameters, without_pretrained_weights
from segkit.module import SegmentationModule
from segkit.summary import summarize
from segkit.train import build
from segkit.validate import require_int

MODEL_CONFIG_DIR = CONFIG_DIR / "model"


def _load_plain_loop() -> Any:
    """benchmarks/plain_loop.py, which lives beside conf/ in the project root (segkit is installed editable)."""
    path = CONFIG_DIR.parent / "benchmarks" / "plain_loop.py"
    spec = importlib.util.spec_from_file_location("plain_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plain_loop = _load_plain_loop()

# Two distinct batches, so consecutive steps see different tensors, as from a real loader.
SYNTHETIC_BATCHES = 2

# trainer.precision -> the autocast dtype the plain loop uses to match it.
AUTOCAST_DTYPES = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16}

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

# Lightning's messages for a setup the bench chooses on purpose.
EXPECTED_WARNINGS = (
    r".*does not have many workers.*",
    r"You defined a `validation_step` but have no `val_dataloader`.*",
)


@dataclass
class TrainingParts:
    """What one row trains: the module, the synthetic batches' loader and where and how it runs."""

    module: SegmentationModule
    loader: DataLoader
    device: torch.device
    autocast_dtype: torch.dtype | None


class CyclingBatches(IterableDataset):
    """`batches` over and over, without end: with `batch_size=None`, a DataLoader over it adds no
    collation or copy, so both loops time their training steps, not the data."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.cycle(self.batches)


def synthetic_loader(batch_size: int, image_size: list[int], num_classes: int, device: torch.device,
                     memory_format: torch.memory_format = torch.contiguous_format, seed: int = 0) -> DataLoader:
    """Seeded random images (N x 3 x H x W, standard normal: normalised pixels) and masks, already on
    `device` in the network's memory format, batch after batch without end (take what you need)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(SYNTHETIC_BATCHES):
        images = torch.randn(batch_size, 3, *image_size, generator=generator)
        masks = torch.randint(0, num_classes, (batch_size, *image_size), generator=generator)
        batches.append((images.to(device, memory_format=memory_format), masks.to(device)))
    return DataLoader(CyclingBatches(batches), batch_size=None)


class AlternatingPlainSteps(Callback):
    """After each of the Trainer's training steps, one step of the plain loop (`plain_loop.train_step`) on
    the same batch, with its own network and optimizer; both timed, device synchronised at each clock
    reading: a Trainer step from the end of the plain step before it (the Trainer's work between steps is
    in it), a plain step from the end of the Trainer's. Taken in turns, the two see the same machine: a
    busy spell of a few seconds slows both, not one. Stops the fit once, after `warmup` pairs, at least
    `min_steps` pairs and `min_seconds` (both loops together) are timed."""

    def __init__(self, plain: TrainingParts, optimizer: torch.optim.Optimizer, warmup: int, min_steps: int,
                 min_seconds: float) -> None:
        self.plain, self.optimizer = plain, optimizer
        self.warmup, self.min_steps, self.min_seconds = warmup, min_steps, min_seconds
        self.segkit_seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self.batch_size: int | None = None
        self._plain_end: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.plain.module.net.train()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        device = self.plain.device
        plain_loop.synchronize(device)
        segkit_end = time.perf_counter()
        images, masks = batch
        plain_loop.train_step(self.plain.module.net, self.plain.module.criterion, self.optimizer, images, masks,
                              device, self.plain.autocast_dtype)
        plain_loop.synchronize(device)
        plain_end = time.perf_counter()
        if batch_idx >= self.warmup:
            self.segkit_seconds.append(segkit_end - self._plain_end)
            self.plain_seconds.append(plain_end - segkit_end)
            self.batch_size = len(images)
        self._plain_end = plain_end
        timed = sum(self.segkit_seconds) + sum(self.plain_seconds)
        if len(self.segkit_seconds) >= self.min_steps and timed >= self.min_seconds:
            trainer.should_stop = True


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
        _release_memory()
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


def _release_memory() -> None:
    """Frees the last run's optimizer state (a Trainer's reference cycles hold it) and returns it to the
    system, so that the peak is that of one run, not of every run's freed memory."""
    gc.collect()
    _return_freed_heap()


def _return_freed_heap() -> None:
    """glibc keeps freed memory mapped; give it back so the next baseline is what is really in use."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


def autocast_dtype(precision: Any) -> torch.dtype | None:
    precision = str(precision)
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"trainer.precision={precision!r}: the bench supports {sorted(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[precision]


def model_names(models: list[str] | None) -> list[str]:
    """The requested model configs, checked; None: every config in conf/model/."""
    available = sorted(path.stem for path in MODEL_CONFIG_DIR.glob("*.yaml"))
    if models is None:
        return available
    unknown = [name for name in models if name not in available]
    if unknown:
        raise ValueError(f"bench.models: {unknown} have no config in {MODEL_CONFIG_DIR}; valid: {available}")
    return list(models)


def row_config(cfg: DictConfig, model_name: str, option: str, device: torch.device) -> DictConfig:
    """The training config of one row: `model_name`'s config (the composed one when it is that model,
    so `model.*` overrides apply), random initial weights (speed does not depend on them), the option's
    keys, and a Trainer that trains until stopped and does nothing else (no validation, checkpoints,
    logs, bars): the warm-up fit stops at `max_steps`, the timed ones from their callback."""
    option_sets = cfg.bench.option_sets
    if option not in option_sets:
        raise ValueError(f"bench.options: {option!r} is not in bench.option_sets; valid: {list(option_sets)}")
    row = copy.deepcopy(cfg)
    with open_dict(row):
        if row.model.name != model_name:
            row.model = OmegaConf.load(MODEL_CONFIG_DIR / f"{model_name}.yaml")
        row.model = without_pretrained_weights(to_plain(row.model))
        for key, value in option_sets[option].items():
            OmegaConf.update(row, key, value, force_add=True)
        row.callbacks = None
        row.logger = None
        row.trainer.update(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, default_root_dir=None,
            min_epochs=None, min_steps=None, max_steps=-1, max_epochs=1, max_time=None, limit_val_batches=0,
            num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )
    return row


def training_parts(row: DictConfig, device: torch.device | None = None) -> TrainingParts:
    """The module built as `segkit.train` builds it, and the synthetic batches it trains on."""
    device = device or resolve_device(row.bench.device)
    dtype = autocast_dtype(row.trainer.precision)
    module = build(row).module.to(device)
    loader = synthetic_loader(row.bench.batch_size, list(row.bench.image_size), row.data.num_classes, device,
                              module.memory_format, row.seed or 0)
    return TrainingParts(module, loader, device, dtype)


def fit(row: DictConfig, parts: TrainingParts, callbacks: list[Callback], max_steps: int = -1) -> None:
    """`Trainer.fit` of the row's Trainer over the synthetic batches."""
    trainer = instantiate(row.trainer, callbacks=callbacks, logger=False, max_steps=max_steps)
    trainer.fit(parts.module, train_dataloaders=parts.loader)
    parts.module.to(parts.device)  # Lightning moves the model back to the CPU when fit ends


def timed_fit(row: DictConfig, parts: TrainingParts, plain: TrainingParts) -> AlternatingPlainSteps:
    """One fit of `parts.module` with a plain-loop step of `plain.module.net` after each of its steps.
    Each gets a new optimizer from the same config, as every `Trainer.fit` makes one: equal work."""
    settings = row.bench
    steps = AlternatingPlainSteps(plain, plain.module.configure_optimizers()["optimizer"], settings.warmup,
                                  settings.steps, settings.seconds)
    fit(row, parts, [steps])
    return steps


def inference_speed(parts: TrainingParts, warmup: int, steps: int, repeats: int) -> tuple[float, float]:
    """(images/s at the bench batch, median latency in ms at batch 1): eval mode, inference_mode."""
    module = parts.module.eval()
    images = parts.loader.dataset.batches[0][0]
    rates, latencies = [], []
    with torch.inference_mode(), torch.autocast(parts.device.type, dtype=parts.autocast_dtype,
                                                enabled=parts.autocast_dtype is not None):
        for _ in range(warmup):
            module(images)
        for _ in range(repeats):
            plain_loop.synchronize(parts.device)
            start = time.perf_counter()
            for _ in range(steps):
                module(images)
            plain_loop.synchronize(parts.device)
            rates.append(steps * len(images) / (time.perf_counter() - start))
        single = images[:1]
        for _ in range(warmup):
            module(single)
        plain_loop.synchronize(parts.device)
        for _ in range(steps * repeats):
            start = time.perf_counter()
            module(single)
            plain_loop.synchronize(parts.device)
            latencies.append(time.perf_counter() - start)
    return statistics.median(rates), statistics.median(latencies) * 1e3


def overhead_ratio(timings: list[AlternatingPlainSteps]) -> float:
    """segkit's training images/s over the plain loop's: the median, over every timed pair of all repeats,
    of the plain step's seconds over those of the Trainer step before it. Neighbours in time see the same
    machine, so a slow spell of this shared 2-core VM (steps up to 2x slower for seconds) cancels out,
    where the sums of a repeat would charge it to whichever loop it hit more."""
    pairs = [(segkit, plain) for t in timings for segkit, plain in zip(t.segkit_seconds, t.plain_seconds)]
    return statistics.median(plain / segkit for segkit, plain in pairs)


def bench_row(row: DictConfig, option: str, device: torch.device) -> dict[str, Any]:
    """One model with one option: every figure of the bench."""
    settings = row.bench
    # cudnn.benchmark is process-wide: set it for both loops, before either runs.
    torch.backends.cudnn.benchmark = bool(row.trainer.get("benchmark") or False)
    net_for_counting = instantiate({**to_plain(row.model), "compile": False})
    image_size = list(settings.image_size)
    macs = summarize(net_for_counting, image_size)["macs"]
    del net_for_counting
    # Memory of segkit alone: building, the warm-up steps (the optimizer state is made in the first) and
    # inference; the plain loop's copy of the network comes after.
    with PeakMemory(device) as memory:
        parts = training_parts(row, device)
        fit(row, parts, [], max_steps=settings.warmup)
        inference_rate, latency_ms = inference_speed(parts, settings.warmup, settings.steps, settings.repeats)
    parts.module.train()  # Lightning keeps the modes it is given: BatchNorm must train on batch statistics
    plain = dataclasses.replace(parts, module=copy.deepcopy(parts.module))  # from the same weights
    timings = []
    for _ in range(settings.repeats):
        timings.append(timed_fit(row, parts, plain))
        _release_memory()
    segkit_rates = [plain_loop.images_per_s(t.batch_size, t.segkit_seconds) for t in timings]
    plain_rates = [plain_loop.images_per_s(t.batch_size, t.plain_seconds) for t in timings]
    train_rate = statistics.median(segkit_rates)
    result = {
        "model": row.model.name,
        "option": option,
        "option_keys": to_plain(settings.option_sets[option]) or {},
        "image_size": image_size,
        "batch_size": settings.batch_size,
        "precision": str(row.trainer.precision),
        "channels_last": bool(row.channels_last),
        "params": count_parameters(parts.module.net),
        "macs": macs,
        "train_images_per_s": train_rate,
        "plain_train_images_per_s": statistics.median(plain_rates),
        "overhead_ratio": overhead_ratio(timings),
        "train_images_per_s_repeats": segkit_rates,
        "plain_train_images_per_s_repeats": plain_rates,
        "step_seconds": {"segkit": [t.segkit_seconds for t in timings], "plain": [t.plain_seconds for t in timings]},
        "inference_images_per_s": inference_rate,
        # How much of the arithmetic saved becomes speed: equal for two models that are as fast per MAC.
        "train_images_per_s_per_gmac": train_rate / (macs / 1e9),
        "inference_images_per_s_per_gmac": inference_rate / (macs / 1e9),
        "latency_ms_batch1": latency_ms,
        "peak_memory_mib": memory.mib,
        "peak_memory_kind": memory.kind,
        "peak_tflops": None,
        "train_mfu": None,
        "inference_mfu": None,
    }
    if device.type == "cuda":
        peak = peak_tflops(torch.cuda.get_device_name(device), result["precision"])
        if peak is not None:
            # Training costs about 3 forward passes (forward, then backward for inputs and for weights).
            result.update(peak_tflops=peak, train_mfu=flop_utilisation(macs, train_rate, peak, forward_passes=3),
                          inference_mfu=flop_utilisation(macs, inference_rate, peak, forward_passes=1))
    return result


def _endless(loader: DataLoader) -> Iterator[Any]:
    """Batches of epoch after epoch (a small split has fewer batches than a measurement needs)."""
    while True:
        yield from loader


def loader_images_per_s(dataloader: DataLoader, batches: int, warmup: int) -> float:
    """Images per second of `dataloader` alone over `batches` batches, after `warmup` (worker start-up is
    not throughput); its workers are stopped before returning."""
    loader = _endless(dataloader)
    for _ in range(warmup):
        next(loader)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(loader)[0])
    rate = images / (time.perf_counter() - start)
    loader.close()  # ends the epoch's iterator and, unless persistent, its workers
    return rate


def measure_loader(cfg: DictConfig, batches: int, warmup: int) -> dict[str, Any]:
    """The configured data's train loader alone: real reading, augmentation and workers."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    rate = loader_images_per_s(datamodule.train_dataloader(), batches, warmup)
    gc.collect()  # persistent workers end with their loader
    return {"data": type(datamodule).__name__, "images_per_s": rate, "batch_size": datamodule.batch_size,
            "image_size": to_plain(cfg.data.get("image_size")), "num_workers": datamodule.num_workers,
            "pin_memory": datamodule.pin_memory, "persistent_workers": datamodule.persistent_workers,
            "batches": batches}


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Without Lightning's per-Trainer banners and its warnings about the bench's deliberate setup."""
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        lightning_logger.setLevel(level)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """One thread count for both loops (they share this process); the caller's is restored after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_settings(settings: DictConfig) -> None:
    for key, minimum in (("warmup", 1), ("steps", 1), ("repeats", 1), ("batch_size", 1), ("loader_batches", 0)):
        require_int(f"bench.{key}", settings[key], minimum)
    if isinstance(settings.seconds, bool) or not isinstance(settings.seconds, (int, float)) or settings.seconds < 0:
        raise ValueError(f"bench.seconds={settings.seconds}: expected a number of seconds >= 0")
    if len(settings.image_size) != 2:
        raise ValueError(f"bench.image_size={list(settings.image_size)}: expected [height, width]")


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Measures every (model, option) row and the loader; writes bench.json and bench.md to
    `paths.output_dir` and returns what bench.json holds."""
    settings = cfg.bench
    _check_settings(settings)
    device = resolve_device(settings.device)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with _quiet_lightning(), _torch_threads(settings.threads):
        threads = torch.get_num_threads()
        for model_name in model_names(to_plain(settings.models)):
            for option in settings.options:
                row = bench_row(row_config(cfg, model_name, option, device), option, device)
                print(_progress_line(row), flush=True)
                rows.append(row)
        loader = measure_loader(cfg, settings.loader_batches, settings.warmup) if settings.loader_batches else None
    if loader is not None:
        # Images/s compare only on the same batches: the loader's size and batch are the data config's.
        same_batches = [row["train_images_per_s"] for row in rows
                        if [row["batch_size"], row["image_size"]] == [loader["batch_size"], loader["image_size"]]]
        loader["over_fastest_training"] = loader["images_per_s"] / max(same_batches) if same_batches else None
    plain_settings = OmegaConf.to_container(settings, resolve=True)
    result = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "torch_threads": threads,
        "settings": {key: plain_settings[key]
                     for key in ("image_size", "batch_size", "warmup", "steps", "seconds", "repeats")},
        "overhead_ratio_min": min((row["overhead_ratio"] for row in rows), default=None),
        "rows": rows,
        "loader": loader,
    }
    (output_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (output_dir / "bench.md").write_text(format_table(result) + "\n")
    return result


def _progress_line(row: dict[str, Any]) -> str:
    return (f"{row['model']} [{row['option']}]: training {row['train_images_per_s']:.2f} images/s, plain loop "
            f"{row['plain_train_images_per_s']:.2f}, ratio {row['overhead_ratio']:.3f}; inference "
            f"{row['inference_images_per_s']:.2f} images/s, {row['latency_ms_batch1']:.1f} ms at batch 1")


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The rows as a markdown table, with the device and settings above it and the loader below."""
    settings = result["settings"]
    lines = [
        f"{result['device']}, torch {result['torch']}, {result['torch_threads']} threads; batch "
        f"{settings['batch_size']}, {'x'.join(map(str, settings['image_size']))}, median of {settings['repeats']} "
        f"repeats of {settings['steps']} steps after {settings['warmup']} warm-up",
        "",
        "| model | option | params | GMACs/image | train images/s | plain loop images/s | segkit/plain "
        "| inference images/s | train images/s per GMAC | inference images/s per GMAC | latency batch 1 (ms) "
        "| peak memory (MiB) | train MFU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        mfu = "n/a" if row["train_mfu"] is None else f"{row['train_mfu']:.1%}"
        lines.append(
            f"| {row['model']} | {row['option']} | {row['params']:,} | {row['macs'] / 1e9:.2f} "
            f"| {row['train_images_per_s']:.2f} | {row['plain_train_images_per_s']:.2f} | {row['overhead_ratio']:.3f} "
            f"| {row['inference_images_per_s']:.2f} | {row['train_images_per_s_per_gmac']:.1f} "
            f"| {row['inference_images_per_s_per_gmac']:.1f} | {row['latency_ms_batch1']:.1f} "
            f"| {_number(row['peak_memory_mib'], 0)} | {mfu} |"
        )
    lines.append("")
    if result["rows"]:
        lines.append(f"segkit/plain training images/s: lowest {result['overhead_ratio_min']:.3f} "
                     f"(peak memory: {result['rows'][0]['peak_memory_kind']})")
    loader = result["loader"]
    if loader is not None:
        line = (f"train loader ({loader['data']}, batch {loader['batch_size']}, {loader['num_workers']} workers, "
                f"pin_memory {loader['pin_memory']}, persistent_workers {loader['persistent_workers']}): "
                f"{loader['images_per_s']:.1f} images/s")
        if loader["over_fastest_training"] is not None:
            line += f", {loader['over_fastest_training']:.1f}x the fastest training above"
        lines.append(line)
    return "\n".join(lines)


def bench_config(overrides: list[str]) -> DictConfig:
    """conf/bench.yaml with command-line style overrides, composed outside a Hydra run (no run directory)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path.cwd())  # no Hydra run folder to resolve; nothing is written there
    _bench_chosen_model_only(cfg, overrides)
    return cfg


def _bench_chosen_model_only(cfg: DictConfig, overrides: list[str]) -> None:
    """`model=NAME` among the overrides benches that model alone, unless bench.models names models."""
    if cfg.bench.models is None and any(override.split("=", 1)[0] == "model" for override in overrides):
        cfg.bench.models = [cfg.model.name]


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bench")
def main(cfg: DictConfig) -> None:
    _bench_chosen_model_only(cfg, list(HydraConfig.get().overrides.task))
    result = bench(cfg)
    print(format_table(result))
    print(f"bench: {Path(cfg.paths.output_dir) / 'bench.json'}, {Path(cfg.paths.output_dir) / 'bench.md'}")


if __name__ == "__main__":
    main()
