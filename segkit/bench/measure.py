"""The bench's measurements: per model (and per speed option of `bench.options`) parameters, MACs, training
images/s through the real `SegmentationModule.training_step` and Lightning `Trainer.fit`, the same steps in the
plain loop (`segkit.bench.plain_loop`: same network, tensors, loss and optimizer, alternated with the Trainer's
in this process) and their ratio, inference images/s and batch-1 latency, peak memory, and on a GPU the model
FLOP utilisation; then the configured data's train loader alone. `bench` writes bench.json and bench.md."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from segkit.bench import plain_loop
from segkit.bench.hardware import PeakMemory, device_name, flop_utilisation, peak_tflops, release_memory, resolve_device
from segkit.bench.loader import measure_loader, synthetic_loader
from segkit.bench.report import format_table, progress_line
from segkit.config import CONFIG_DIR, to_plain
from segkit.engine.module import SegmentationModule
from segkit.models import MODEL_CONFIG_DIR, count_parameters, model_names, without_pretrained_weights
from segkit.models.summary import summarize
from segkit.tasks.train import build
from segkit.utilities.checks import require_int

# trainer.precision -> the autocast dtype the plain loop uses to match it.
AUTOCAST_DTYPES = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16}

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


def autocast_dtype(precision: Any) -> torch.dtype | None:
    precision = str(precision)
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"trainer.precision={precision!r}: the bench supports {sorted(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[precision]


def bench_models(models: list[str] | None) -> list[str]:
    """The requested model configs, checked; None: every config in conf/model/."""
    available = model_names()
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
    """(images/s at the bench batch, median latency in ms at batch 1): eval mode with BatchNorm folded, as segkit.eval
    and segkit.predict run a trained network, inference_mode."""
    module = parts.module.fold_batchnorm()
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
    machine, so a slow spell of a shared machine cancels out, where the sums of a repeat would charge it to
    whichever loop it hit more."""
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
        release_memory()
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


@contextmanager
def quiet_lightning() -> Iterator[None]:
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
def torch_threads(threads: int | None) -> Iterator[None]:
    """One thread count for both loops (they share this process); the caller's is restored after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_settings(settings: DictConfig) -> None:
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
    check_settings(settings)
    device = resolve_device(settings.device)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with quiet_lightning(), torch_threads(settings.threads):
        threads = torch.get_num_threads()
        for model_name in bench_models(to_plain(settings.models)):
            for option in settings.options:
                row = bench_row(row_config(cfg, model_name, option, device), option, device)
                print(progress_line(row), flush=True)
                rows.append(row)
        loader = (measure_loader(instantiate(cfg.data), settings.loader_batches, settings.warmup)
                  if settings.loader_batches else None)
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


def bench_config(overrides: list[str]) -> DictConfig:
    """conf/bench.yaml with command-line style overrides, composed outside a Hydra run (no run directory)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path.cwd())  # no Hydra run folder to resolve; nothing is written there
    bench_chosen_model_only(cfg, overrides)
    return cfg


def bench_chosen_model_only(cfg: DictConfig, overrides: list[str]) -> None:
    """`model=NAME` among the overrides benches that model alone, unless bench.models names models."""
    if cfg.bench.models is None and any(override.split("=", 1)[0] == "model" for override in overrides):
        cfg.bench.models = [cfg.model.name]


def plain_loop_rates(overrides: list[str]) -> tuple[DictConfig, torch.device, list[float]]:
    """The plain loop alone on the bench config's first model (`overrides` as on the command line): its
    training images/s in each of `bench.repeats` repeats (benchmarks/plain_loop.py prints them)."""
    cfg = bench_config(overrides)
    if cfg.bench.threads:
        torch.set_num_threads(cfg.bench.threads)
    device = resolve_device(cfg.bench.device)
    parts = training_parts(row_config(cfg, cfg.model.name, "default", device), device)
    rates = []
    for _ in range(cfg.bench.repeats):
        optimizer = parts.module.configure_optimizers()["optimizer"]  # the optimizer config, completed
        batches = itertools.islice(parts.loader, cfg.bench.warmup + cfg.bench.steps)
        rates.append(plain_loop.images_per_s(cfg.bench.batch_size, plain_loop.train_step_seconds(
            parts.module.net, parts.module.criterion, optimizer, batches, cfg.bench.warmup, parts.device,
            parts.autocast_dtype)))
    return cfg, parts.device, rates
