"""What `segkit tradeoff` does: accuracy against cost for the runs of a multirun, as a table and a plot.

For every finished job of the sweep (its metrics.json): the metric (default val/miou; for a run with test-time
augmentation its figure without it, `without_tta`, as the costs are of one forward pass) against GMACs per
image and parameters (`segkit.models.summary.summarize` at the run's data.image_size) and CPU latency at batch 1,
each network built from the run's config.yaml and timed in eval mode in this one process, in turns (one
forward of each network per round), so a busy spell of a shared machine slows every model alike. The
runs on the Pareto front of each cost (none is both cheaper and better) are marked. Writes
<sweep dir>/tradeoff.csv, tradeoff.md and tradeoff.png.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from matplotlib.figure import Figure  # a Figure of its own draws to files with Agg, whatever pyplot's backend
from torch import nn

from segkit.callbacks.sweep_summary import summarize_sweep
from segkit.checkpoints.trust import untrusted_entries
from segkit.models.fusion import fold_batchnorm
from segkit.models import without_pretrained_weights
from segkit.models.summary import summarize

log = logging.getLogger(__name__)

# (column, name, axis label) of each cost the metric is plotted against.
COSTS = (
    ("gmacs", "GMACs", "GMACs per image"),
    ("mparams", "parameters", "parameters (millions)"),
    ("latency_ms", "latency", "CPU latency at batch 1 (ms)"),
)


@dataclass
class Run:
    """One finished job of the sweep and its network, built for timing."""

    job: str
    model: str
    score: float
    image_size: list[int]
    net: nn.Module
    memory_format: torch.memory_format


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[bool]:
    """For each point, whether no other point has a cost as low and a score as high, and one of them strictly
    better (lower cost, higher score): the points a user would choose from. Equal points are all on it."""
    return [
        not any(other_cost <= cost and other_score >= score and (other_cost < cost or other_score > score)
                for other_cost, other_score in zip(costs, scores))
        for cost, score in zip(costs, scores)
    ]


def _run_config(job_dir: Path, trusted_targets: Iterable[str]) -> dict[str, Any]:
    """The job's config.yaml (what segkit.train wrote), with its model refused if it names code segkit does not build."""
    path = job_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; segkit.train writes it into every run folder")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path}: expected a segkit training config with a `model:` section")
    untrusted = untrusted_entries({"model": config["model"]}, trusted_targets)
    if untrusted:
        raise ValueError(f"{path}: refusing to build the model: {'; '.join(untrusted)}; list targets you trust "
                         "with --trusted-targets")
    return config


def read_runs(sweep_dir: Path, metric: str, trusted_targets: Iterable[str] = ()) -> list[Run]:
    """Every job of `sweep_dir` with `metric` in its metrics.json; jobs without it are logged and left out."""
    runs = []
    trusted_targets = list(trusted_targets)
    for row in summarize_sweep(sweep_dir, metric):
        if row[metric] is None or not math.isfinite(row[metric]):
            log.warning("job %s of %s has no finite %s (%s): left out of the trade-off", row["job"], sweep_dir,
                        metric, row["status"])
            continue
        job_dir = sweep_dir / row["job"]
        score = row[metric]
        if row.get(f"without_tta.{metric}") is not None:
            # The costs are those of one forward pass: so is the figure they are set against.
            score = row[f"without_tta.{metric}"]
            log.info("job %s reported %s with test-time augmentation (%.4f); the trade-off takes its figure without it "
                     "(%.4f), as the costs are of one forward pass", row["job"], metric, row[metric], score)
        config = _run_config(job_dir, trusted_targets)
        image_size = (config.get("data") or {}).get("image_size")
        if not image_size:
            raise ValueError(f"{job_dir / 'config.yaml'}: data.image_size is null; MACs and latency need a fixed "
                             "input size")
        # Eager and from scratch: the cost of the network itself, whatever compile and initial weights it trained with.
        # BatchNorm folded, as segkit.eval and segkit.predict run a trained network.
        net = fold_batchnorm(instantiate({**without_pretrained_weights(config["model"]), "compile": False}))
        memory_format = torch.channels_last if config.get("channels_last") else torch.contiguous_format
        runs.append(Run(row["job"], config["model"].get("name", row["job"]), float(score), list(image_size),
                        net.to(memory_format=memory_format).eval(), memory_format))
    if not runs:
        raise ValueError(f"{sweep_dir}: no job with {metric} in its metrics.json (is it a segkit.train -m sweep folder?)")
    return runs


def batch1_latencies_ms(runs: Sequence[Run], warmup: int, rounds: int) -> list[float]:
    """Median ms of one forward at batch 1 on the CPU per run, the runs timed in turns in each round.
    (segkit.bench times one model after another in its own process; here the models share the same moments.)"""
    inputs = [torch.randn(1, 3, *run.image_size).contiguous(memory_format=run.memory_format) for run in runs]
    seconds: list[list[float]] = [[] for _ in runs]
    with torch.inference_mode():
        for run, images in zip(runs, inputs):
            for _ in range(warmup):
                run.net(images)
        for _ in range(rounds):
            for times, run, images in zip(seconds, runs, inputs):
                start = time.perf_counter()
                run.net(images)
                times.append(time.perf_counter() - start)
    return [statistics.median(times) * 1e3 for times in seconds]


def tradeoff_rows(runs: Sequence[Run], metric: str, warmup: int, rounds: int) -> list[dict[str, Any]]:
    """One row per run: job, model, metric, GMACs, parameters, latency, and on which costs' fronts it is."""
    latencies = batch1_latencies_ms(runs, warmup, rounds)
    rows = []
    for run, latency in zip(runs, latencies):
        summary = summarize(run.net, run.image_size)
        rows.append({"job": run.job, "model": run.model, metric: run.score,
                     "image_size": "x".join(map(str, run.image_size)), "gmacs": summary["macs"] / 1e9,
                     "params": summary["params"], "mparams": summary["params"] / 1e6, "latency_ms": latency})
    scores = [row[metric] for row in rows]
    for cost, _, _ in COSTS:
        for row, on_front in zip(rows, pareto_front([row[cost] for row in rows], scores)):
            row[f"pareto_{cost}"] = on_front
    return rows


def _label(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The model's name, with its job where the sweep ran the model more than once."""
    repeated = sum(other["model"] == row["model"] for other in rows) > 1
    return f"{row['model']} (job {row['job']})" if repeated else row["model"]


def format_markdown(rows: Sequence[dict[str, Any]], metric: str) -> str:
    lines = [
        f"| model | job | {metric} | GMACs | parameters | CPU latency batch 1 (ms) | Pareto front of |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in sorted(rows, key=lambda row: -row[metric]):
        fronts = ", ".join(name for cost, name, _ in COSTS if row[f"pareto_{cost}"]) or "-"
        lines.append(f"| {row['model']} | {row['job']} | {row[metric]:.4f} | {row['gmacs']:.3f} | {row['params']:,} "
                     f"| {row['latency_ms']:.1f} | {fronts} |")
    size = {row["image_size"] for row in rows}
    lines += ["", f"GMACs and latency at {', '.join(sorted(size))}, latency with {rows[0]['threads']} CPU threads; "
              f"Pareto front: no other run is both cheaper and better in {metric}."]
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> None:
    """One panel per cost: every run, the Pareto front's runs joined by a line."""
    figure = Figure(figsize=(5 * len(COSTS), 4.2), layout="constrained")
    axes = figure.subplots(1, len(COSTS), sharey=True)
    for axis, (cost, _, label) in zip(axes, COSTS):
        front = sorted((row for row in rows if row[f"pareto_{cost}"]), key=lambda row: row[cost])
        axis.plot([row[cost] for row in front], [row[metric] for row in front], "-", color="tab:red", zorder=1,
                  label="Pareto front")
        for row in rows:
            on_front = row[f"pareto_{cost}"]
            axis.scatter(row[cost], row[metric], s=50, zorder=2, color="tab:red" if on_front else "tab:gray")
            axis.annotate(_label(row, rows), (row[cost], row[metric]), textcoords="offset points", xytext=(5, 5),
                          fontsize=8)
        axis.set_xscale("log")  # costs differ by orders of magnitude across models
        axis.set_xlabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(metric)
    # Outside the panels: inside, it can cover a run's label.
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right")
    figure.suptitle(f"{metric} against cost ({len(rows)} runs)")
    figure.savefig(path, dpi=120)


def write_tradeoff(sweep_dir: Path, metric: str = "val/miou", warmup: int = 3, rounds: int = 20,
                   trusted_targets: Iterable[str] = (), threads: int | None = None) -> dict[str, Path]:
    """Measures the sweep's runs and writes tradeoff.csv, tradeoff.md and tradeoff.png into `sweep_dir`.
    `threads`: torch's CPU threads for the timing (None: torch's default)."""
    if warmup < 0 or rounds < 1 or (threads is not None and threads < 1):
        raise ValueError(f"warmup={warmup}, rounds={rounds}, threads={threads}: expected warmup >= 0, rounds >= 1 "
                         "and threads >= 1")
    runs = read_runs(sweep_dir, metric, trusted_targets)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        rows = tradeoff_rows(runs, metric, warmup, rounds)
    finally:
        torch.set_num_threads(previous_threads)
    for row in rows:
        row["threads"] = threads or previous_threads
    paths = {kind: sweep_dir / f"tradeoff.{kind}" for kind in ("csv", "md", "png")}
    with paths["csv"].open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["md"].write_text(format_markdown(rows, metric) + "\n")
    plot(rows, metric, paths["png"])
    return paths
