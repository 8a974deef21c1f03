"""`segkit bench bench.peers=true`: segkit's networks side by side with the small segmentation networks people
compare them with, in one process, on the same batches, threads, memory format, loss, optimizer and allocator.

Peers: torchvision's LR-ASPP and DeepLabV3 on MobileNetV3-Large (always there), and segmentation_models_pytorch's
U-Net on MobileNetV2 when that package is installed (`pip install 'segkit[peers]'`), all with random weights
(speed does not depend on them). Each network trains with the plain loop's step (`plain_loop.train_step`:
forward, the config's loss, backward, the config's optimizer) and predicts with BatchNorm folded, as segkit.eval
runs a trained network. The networks take turns: in each of `bench.repeats` rounds every network takes one untimed
step (caches, allocator) and then `bench.steps` timed ones, so a busy spell of a shared machine slows all of them,
not the one it happened to hit. Figures are each network's best round (the least disturbed), as in the issue that
asked for the comparison; the medians are in bench.json.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from segkit.bench import plain_loop
from segkit.bench.hardware import device_name, resolve_device
from segkit.bench.loader import synthetic_loader
from segkit.bench.measure import (
    TrainingParts,
    bench_models,
    check_settings,
    quiet_lightning,
    row_config,
    torch_threads,
    training_parts,
)
from segkit.config import to_plain
from segkit.models.fusion import fold_batchnorm
from segkit.models.summary import summarize


class LogitsOf(nn.Module):
    """A torchvision segmentation model (which returns a dict) as a network that returns the logits."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


def lraspp_mobilenetv3(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return LogitsOf(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes),
                    "lraspp_mobilenetv3")


def deeplabv3_mobilenetv3(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return LogitsOf(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                                 aux_loss=False), "deeplabv3_mobilenetv3")


def smp_unet_mobilenetv2(num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    net = smp.Unet("mobilenet_v2", encoder_weights=None, classes=num_classes)
    net.name = "smp_unet_mobilenetv2"
    return net


# segkit's side of the comparison unless bench.models names others: its networks built to be small and fast.
EFFICIENT_MODELS = ["dsc_segnet", "segnet_mobilenetv2"]

# name -> (builder, the package it needs, where it comes from)
PEERS: dict[str, tuple[Callable[[int], nn.Module], str, str]] = {
    "lraspp_mobilenetv3": (lraspp_mobilenetv3, "torchvision", "torchvision"),
    "deeplabv3_mobilenetv3": (deeplabv3_mobilenetv3, "torchvision", "torchvision"),
    "smp_unet_mobilenetv2": (smp_unet_mobilenetv2, "segmentation_models_pytorch", "smp"),
}


@dataclasses.dataclass
class Contender:
    """One network of the comparison with its loss and optimizer, and the seconds of each timed call per round."""

    name: str
    source: str
    parts: TrainingParts
    optimizer: torch.optim.Optimizer
    macs: int
    step_seconds: list[list[float]] = dataclasses.field(default_factory=list)
    latency_seconds: list[list[float]] = dataclasses.field(default_factory=list)


def available_peers() -> tuple[list[str], list[str]]:
    """(peers whose package is installed, peers skipped for a missing one)."""
    present = [name for name, (_, package, _) in PEERS.items() if importlib.util.find_spec(package) is not None]
    return present, [name for name in PEERS if name not in present]


def contenders(cfg: DictConfig, segkit_models: list[str], device: torch.device) -> list[Contender]:
    """segkit's `segkit_models` as `segkit.train` builds them (loss, optimizer, memory format of the config), then
    each installed peer in the same module in place of segkit's network: the same loss, a new optimizer of the same
    config, the same memory format."""
    image_size = list(cfg.bench.image_size)
    entries = [(name, "segkit", training_parts(row_config(cfg, name, "default", device), device))
               for name in segkit_models]
    for name in available_peers()[0]:
        builder, _, source = PEERS[name]
        torch.manual_seed(cfg.seed or 0)
        parts = training_parts(row_config(cfg, "dsc_segnet", "default", device), device)
        parts.module.net = builder(cfg.data.num_classes).to(device, memory_format=parts.module.memory_format)
        entries.append((name, source, parts))
    return [Contender(name, source, parts, parts.module.configure_optimizers()["optimizer"],
                      summarize(parts.module.net, image_size)["macs"]) for name, source, parts in entries]


def _timed(call: Callable[[], Any], device: torch.device) -> float:
    plain_loop.synchronize(device)
    start = time.perf_counter()
    call()
    plain_loop.synchronize(device)
    return time.perf_counter() - start


def measure_round(contender: Contender, images: torch.Tensor, masks: torch.Tensor, steps: int) -> None:
    """One round of one network: an untimed training step, `steps` timed ones; then its BatchNorm folded, an
    untimed and `steps` timed batch-1 forwards."""
    parts = contender.parts
    net, device, dtype = parts.module.net, parts.device, parts.autocast_dtype
    net.train()

    def train_step() -> None:
        plain_loop.train_step(net, parts.module.criterion, contender.optimizer, images, masks, device, dtype)

    train_step()
    contender.step_seconds.append([_timed(train_step, device) for _ in range(steps)])
    folded, single = fold_batchnorm(net), images[:1]

    def predict() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            folded(single)

    predict()
    contender.latency_seconds.append([_timed(predict, device) for _ in range(steps)])


def row(contender: Contender, batch_size: int) -> dict[str, Any]:
    """The network's figures: training images/s and GMAC/s of its best round (and the median round), batch-1
    latency of its best round (the median call of that round)."""
    rates = [batch_size * len(seconds) / sum(seconds) for seconds in contender.step_seconds]
    latencies = [statistics.median(seconds) * 1e3 for seconds in contender.latency_seconds]
    gmacs = contender.macs / 1e9
    return {
        "model": contender.name,
        "source": contender.source,
        "params": sum(p.numel() for p in contender.parts.module.net.parameters()),
        "macs": contender.macs,
        "train_images_per_s": max(rates),
        "train_images_per_s_median": statistics.median(rates),
        "train_gmacs_per_s": max(rates) * gmacs,
        "train_images_per_s_rounds": rates,
        "latency_ms_batch1": min(latencies),
        "latency_ms_batch1_median": statistics.median(latencies),
        "latency_ms_batch1_rounds": latencies,
    }


def compare(cfg: DictConfig, device: torch.device, segkit_models: list[str]) -> dict[str, Any]:
    """segkit's `segkit_models` and the installed peers side by side (module docstring): their rows, each segkit
    network's training GMAC/s over each peer's, and the peers skipped for a missing package."""
    settings = cfg.bench
    everyone = contenders(cfg, segkit_models, device)
    first = everyone[0].parts
    images, masks = next(iter(synthetic_loader(settings.batch_size, list(settings.image_size), cfg.data.num_classes,
                                               device, first.module.memory_format, cfg.seed or 0)))
    for _ in range(settings.repeats):
        for contender in everyone:
            measure_round(contender, images, masks, settings.steps)
    rows = [row(contender, settings.batch_size) for contender in everyone]
    peers = [r for r in rows if r["source"] != "segkit"]
    ratios = {f"{mine['model']}/{peer['model']}": mine["train_gmacs_per_s"] / peer["train_gmacs_per_s"]
              for mine in rows if mine["source"] == "segkit" for peer in peers}
    return {"device": device_name(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "batch_size": settings.batch_size, "image_size": list(settings.image_size), "rounds": settings.repeats,
            "steps": settings.steps, "rows": rows, "train_gmacs_per_s_ratios": ratios,
            "skipped_peers": available_peers()[1]}


def bench_peers(cfg: DictConfig) -> dict[str, Any]:
    """`segkit bench bench.peers=true`: `compare` of `bench.models` (null: segkit's dsc_segnet and
    segnet_mobilenetv2, the efficient ones) with the peers, under `bench.threads`; writes peers.json and peers.md
    to `paths.output_dir` and returns what peers.json holds."""
    settings = cfg.bench
    check_settings(settings)
    device = resolve_device(settings.device)
    models = EFFICIENT_MODELS if settings.models is None else bench_models(to_plain(settings.models))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with quiet_lightning(), torch_threads(settings.threads):
        comparison = compare(cfg, device, models)
    (output_dir / "peers.json").write_text(json.dumps(comparison, indent=2) + "\n")
    (output_dir / "peers.md").write_text(format_comparison(comparison) + "\n")
    return comparison


def format_comparison(comparison: dict[str, Any]) -> str:
    lines = [
        (f"{comparison['device']}, torch {comparison['torch']}, {comparison['torch_threads']} threads; batch "
         f"{comparison['batch_size']}, {'x'.join(map(str, comparison['image_size']))}; best of {comparison['rounds']} "
         f"alternating rounds of {comparison['steps']} steps (each round's first step untimed); inference with "
         "BatchNorm folded"),
        "",
        "| model | from | params | GMACs/image | train images/s | train GMAC/s | latency batch 1 (ms) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in comparison["rows"]:
        lines.append(f"| {r['model']} | {r['source']} | {r['params']:,} | {r['macs'] / 1e9:.3f} "
                     f"| {r['train_images_per_s']:.1f} | {r['train_gmacs_per_s']:.1f} | {r['latency_ms_batch1']:.1f} |")
    lines.append("")
    lines += [f"train GMAC/s {pair}: {ratio:.2f}" for pair, ratio in comparison["train_gmacs_per_s_ratios"].items()]
    if comparison["skipped_peers"]:
        lines.append(f"skipped (package not installed: pip install 'segkit[peers]'): "
                     f"{', '.join(comparison['skipped_peers'])}")
    return "\n".join(lines)
