"""Multirun summaries: after `python -m segkit.train -m ...`, one CSV row per job with its overrides and
final metrics, best first, so a sweep is read in one place rather than job folder by job folder."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

SUMMARY_FILE = "multirun_summary.csv"


def _override_columns(overrides: list[str]) -> dict[str, str]:
    columns = {}
    for override in overrides:
        key, _, value = override.partition("=")
        columns[key.lstrip("+~")] = value
    return columns


def _metric_columns(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """metrics.json flattened to scalars: the per-class IoU dict becomes one column per class, and a group of
    figures (`without_tta`) columns named `<group>.<key>`."""
    columns = {}
    for key, value in metrics.items():
        key = prefix + key
        if isinstance(value, dict) and key.endswith("_per_class"):
            columns.update({f"{key.removesuffix('_per_class')}_{name}": item for name, item in value.items()})
        elif isinstance(value, dict):
            columns.update(_metric_columns(value, f"{key}."))
        elif isinstance(value, list):
            columns[key] = "x".join(map(str, value))
        else:
            columns[key] = value
    return columns


def summarize_sweep(sweep_dir: Path, metric: str, mode: str = "max") -> list[dict[str, Any]]:
    """One row per job folder of `sweep_dir` (found by Hydra's `.hydra/overrides.yaml`), best `metric`
    first; a job without metrics.json (failed or unfinished) is kept, last, with status `no metrics`."""
    if mode not in ("max", "min"):
        raise ValueError(f"optimized_metric_mode must be 'max' or 'min', got {mode!r}")
    rows = []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        rows.append({
            "job": str(job_dir.relative_to(sweep_dir)),
            "status": "done" if metrics else "no metrics",
            metric: metrics.get(metric),
            "overrides": " ".join(overrides),
            **_override_columns(overrides),
            **_metric_columns(metrics),
        })

    def order(row: dict[str, Any]) -> tuple[bool, float]:
        value = row[metric]
        missing = value is None or not math.isfinite(value)
        return missing, 0.0 if missing else (-value if mode == "max" else value)

    return sorted(rows, key=order)


def write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    columns: dict[str, None] = {}  # every row's keys, in first-seen order
    for row in rows:
        columns.update(dict.fromkeys(row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


class MultirunSummary(Callback):
    """Hydra callback (`hydra.callbacks.multirun_summary` in conf/train.yaml): writes `<sweep dir>/multirun_summary.csv` when a
    multirun ends, whichever sweeper or launcher ran it."""

    def __init__(self, metric: str, mode: str = "max") -> None:
        self.metric = metric
        self.mode = mode

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize_sweep(sweep_dir, self.metric, self.mode)
        path = sweep_dir / SUMMARY_FILE
        write_summary(rows, path)
        print(f"segkit: {len(rows)} runs, best {self.metric} first: {path}")
        for row in rows:
            value = row[self.metric]
            shown = f"{value:.4f}" if isinstance(value, float) else "-"
            print(f"  job {row['job']:>3}  {self.metric} {shown}  {row['overrides']}")
        print(f"  accuracy against GMACs, parameters and latency: python -m segkit.tradeoff {sweep_dir}")
