"""The loggers segkit configures (conf/logger/) and what a run does with them.

- `ResumableCSVLogger`: Lightning's CSVLogger that keeps the rows of a run resumed into its own folder.
- `wandb_logger` builds Lightning's WandbLogger with segkit's defaults: in a Hydra multirun the runs of
  one sweep share a group (the sweep folder's name) and each is named by its job's overrides; a run
  resumed from a checkpoint that a wandb run wrote logs into that same wandb run.
- `time_to_miou` reads from a run's metrics.csv when its validation mIoU first reached given values.
- `log_run_summary` puts values (parameters, MACs, the final metrics) in the wandb run's summary;
  `close_loggers` ends it.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from segkit.checkpoints import read_checkpoint
from segkit.utilities.extras import require

# Where a checkpoint keeps the id of the wandb run that wrote it.
RUN_ID_KEY = "wandb_run_id"

# Lightning's own values of `ckpt_path`, which name no file.
LIGHTNING_CKPT_PATHS = ("last", "best", "hpc", "registry")


def csv_metrics_path(loggers: Sequence[Logger]) -> Path | None:
    """The metrics.csv of the first CSV logger among `loggers`, if any."""
    csv_logger = next((logger for logger in loggers if isinstance(logger, CSVLogger)), None)
    return None if csv_logger is None else Path(csv_logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE


def time_to_miou(metrics_csv: Path, thresholds: Sequence[float], metric: str = "val/miou",
                 ) -> dict[str, dict[str, float] | None]:
    """For each threshold, when `metric` first reached it in the rows of `metrics_csv` (a run's CSV log):
    `minutes` of training (`time/elapsed_s`, which each validation of a fit logs) and `epochs` trained by then;
    None where it never did."""
    reached: dict[str, dict[str, float] | None] = {f"{threshold:g}": None for threshold in thresholds}
    with metrics_csv.open(newline="") as file:
        for row in csv.DictReader(file):
            if not row.get(metric) or not row.get("time/elapsed_s"):
                continue
            for threshold in thresholds:
                if reached[f"{threshold:g}"] is None and float(row[metric]) >= threshold:
                    reached[f"{threshold:g}"] = {"minutes": round(float(row["time/elapsed_s"]) / 60, 2),
                                                 "epochs": int(float(row["epoch"])) + 1}
    return reached


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that the rows of an earlier run in the same folder (a run resumed with
    `hydra.run.dir=<its folder>`) stay in `metrics.csv`, followed by the new ones: Lightning's deletes the file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer_started = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._writer_started:
            return super().experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        earlier_rows = []
        if path.is_file():
            with path.open(newline="") as file:
                earlier_rows = list(csv.DictReader(file))
        writer = super().experiment  # deletes metrics.csv
        self._writer_started = True
        if earlier_rows:
            writer.metrics[:0] = earlier_rows
            writer.save()  # back on disk at once, before any new row
        return writer


def wandb_logger(
    name: str | None = None,
    group: str | None = None,
    id: str | None = None,  # noqa: A002 - WandbLogger's and wandb.init's name for it
    resume_from: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """Lightning's WandbLogger (`kwargs` are its arguments and wandb.init's). Unless given:

    - `group` and `name`: in a Hydra multirun, the sweep folder's name and the job's overrides
      (`hydra.job.override_dirname`); in a single run no group and wandb's own run name.
    - `id`: the wandb run id stored in the checkpoint `resume_from` (the run's `ckpt_path`), so the
      resumed training continues that run (WandbLogger resumes with `resume="allow"`).
    """
    require("wandb", "logger=wandb")  # with the pip line, where WandbLogger's own error would not give it
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        group = group or Path(hydra_cfg.sweep.dir).name
        name = name or hydra_cfg.job.override_dirname or None
    if id is None and resume_from is not None:
        id = run_id_in_checkpoint(resume_from)  # noqa: A001
    return WandbLogger(name=name, group=group, id=id, **kwargs)


def run_id_in_checkpoint(path: str | Path) -> str | None:
    """The id of the wandb run that wrote the checkpoint at `path`, or None if none did or `path` is one of
    Lightning's own `ckpt_path` values ("last", ...); a missing file is `read_checkpoint`'s error."""
    if str(path) in LIGHTNING_CKPT_PATHS:
        return None
    return read_checkpoint(path, mmap=True).get(RUN_ID_KEY)


@rank_zero_only
def log_run_summary(loggers: Sequence[Logger], values: Mapping[str, Any]) -> None:
    """Puts `values` in the summary of every wandb run among `loggers` (the numbers a run table shows)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(values))


def close_loggers(loggers: Sequence[Logger]) -> None:
    """Ends the wandb run, so its files are complete and the next run of a sweep starts a new one."""
    if not any(isinstance(logger, WandbLogger) for logger in loggers):
        return
    wandb = require("wandb")  # only here: wandb takes about a second to import, and CSV runs never need it
    if wandb.run is not None:
        wandb.finish()
