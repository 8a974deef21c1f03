"""What a run prints and what its log file (`<run dir>/<command>.log`, e.g. train.log) keeps.

- `RunLog`, a Hydra callback of every command (conf/hydra/default.yaml): Python warnings go through logging, so
  the log file keeps them; the error of a failed run goes to the log file with its traceback, and an ordinary
  user error (a bad value, file or checkpoint) prints one clear message on the console and exits 1.
- `EpochLog`: one line of metrics per epoch, the record a non-interactive console (nohup, SLURM) lacks, where the
  progress bar prints only its last state.
- `ModelSummary`: Lightning's summary without the metric modules and the FLOPs column.
- `LightningTipFilter`: drops Lightning's advertising tips (conf/hydra/default.yaml puts it on Lightning's logger).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from typing import Any

import lightning as L
import torchmetrics
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import get_human_readable_count, summarize
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from segkit.checkpoints import CheckpointError
from segkit.image_files import DataError
from segkit.validate import ConfigError

log = logging.getLogger(__name__)

# Errors whose message says all a user needs: the key, file or value and what was expected.
USER_ERRORS = (ConfigError, DataError, CheckpointError, MissingMandatoryValue)

# The file-only logger of conf/hydra/default.yaml: a failed run's traceback, which the console does not repeat.
FAILURE_LOGGER = "segkit.failure"
# The file-only logger of conf/hydra/default.yaml: what a command prints as its result.
REPORT_LOGGER = "segkit.report"


def _raised(job_return: JobReturn) -> BaseException | None:
    """The exception of a failed job. `JobReturn.return_value` re-raises it after writing a line that Hydra writes
    again when it reports the error itself; that first copy is dropped."""
    if job_return.status != JobStatus.FAILED:
        return None
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            job_return.return_value
        except Exception as error:  # noqa: BLE001 - any error of the job is the one to report
            return error
    return None


def log_file() -> str | None:
    """The path of the file the root logger writes to (Hydra's `file` handler), if any."""
    return next((handler.baseFilename for handler in logging.getLogger().handlers
                 if isinstance(handler, logging.FileHandler)), None)


def user_message(error: BaseException) -> str:
    """The one-line message of a user error."""
    if isinstance(error, MissingMandatoryValue):
        return f"{error.full_key}=... is required: give it on the command line"
    return str(error)


class RunLog(HydraCallback):
    """Every command's logging (conf/hydra/default.yaml), set up after Hydra has configured the job's handlers."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        logging.captureWarnings(True)  # warnings reach the log file, not only the console
        # torch 2.10 deprecated LeafSpec, which Lightning still uses; the warning names no setting a user can change
        # and prints on every run. Only this message from that module is hidden.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        error = _raised(job_return)
        if error is None:
            return
        logging.getLogger(FAILURE_LOGGER).error("%s failed", config.hydra.job.name, exc_info=error)
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
        # In a multirun the sweep goes on to its other jobs and Hydra reports the failures at the end.
        if isinstance(error, USER_ERRORS) and not full_error and HydraConfig.get().mode == RunMode.RUN:
            where = log_file()
            print(f"segkit.{config.hydra.job.name}: error: {user_message(error)}", file=sys.stderr)
            print(f"  (traceback{f' in {where}' if where else ''}; HYDRA_FULL_ERROR=1 prints it here)", file=sys.stderr)
            sys.exit(1)


def report(text: str) -> None:
    """Prints a command's closing summary and keeps it in the log file (the console gets it as it is, without the
    log's level prefix)."""
    print(text)
    logging.getLogger(REPORT_LOGGER).info("%s", text)


class ConsoleHandler(logging.StreamHandler):
    """The console handler of conf/hydra/default.yaml: writes warnings and errors to `sys.stderr`, as Python's
    warnings go, and the rest to `sys.stdout`, each as it is at that moment. Rich's progress bar replaces both
    while it draws, to print what others write above itself; a handler holding the streams of start-up would
    write through the bar and be drawn over."""

    def __init__(self, stream: Any = None) -> None:  # `stream`: Hydra's config passes sys.stdout
        self._level_of_record = logging.INFO
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stderr if self._level_of_record >= logging.WARNING else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stdout or sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        self._level_of_record = record.levelno  # under the handler's lock (Handler.handle)
        super().emit(record)


class LightningTipFilter(logging.Filter):
    """Drops Lightning's tips (other products to install) and its note that a model summary is configured: lines of
    every run that say nothing about this one."""

    NOISE = ("💡 Tip:", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


class EpochLog(L.Callback):
    """Logs one line per epoch: the epoch, every scalar metric but per-class IoUs (the CSV and metrics.json hold
    those) and the epoch's duration, e.g.
    `epoch 2/5  lr/group0 0.0009  train/acc 0.71  train/loss_epoch 0.8312  train/miou 0.512  val/acc 0.74 ...  (41 s)`.

    The line is written when the next epoch starts or training ends: the module logs the epoch's training metrics
    in its own `on_train_epoch_end`, which Lightning calls after the callbacks' one.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._ended: tuple[int, float] | None = None  # (epoch, seconds) of the epoch whose line is due

    @rank_zero_only
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_ended_epoch(trainer)
        self._started = time.monotonic()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = (trainer.current_epoch, time.monotonic() - self._started)

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_ended_epoch(trainer)

    def _log_ended_epoch(self, trainer: L.Trainer) -> None:
        if self._ended is None:
            return
        epoch, seconds = self._ended
        self._ended = None
        metrics = {name: float(value) for name, value in sorted(trainer.callback_metrics.items())
                   if value.numel() == 1 and "/iou_" not in name and not name.endswith("_step")}
        values = "  ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s  %s  (%.0f s)", epoch + 1, total, values, seconds)


class ModelSummary(LightningModelSummary):
    """Lightning's model summary, logged (so the log file has it too), without the metric modules (they hold no
    weights) and without FLOPs, which Lightning counts only for a module with an `example_input_array` and
    otherwise prints as 0 (segkit puts MACs at the training size in metrics.json). Written here because
    Lightning's summary callbacks print every module and the FLOPs column whatever they are given."""

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)
        self.depth = max_depth

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.depth and trainer.is_global_zero:
            log.info("\n%s", summary_table(pl_module, self.depth))


def summary_table(module: L.LightningModule, max_depth: int) -> str:
    """Name, type and parameters of `module`'s layers down to `max_depth`, metrics left out, and the totals."""
    summary = summarize(module, max_depth=max_depth)
    metrics = tuple(name for name, child in module.named_modules() if isinstance(child, torchmetrics.Metric))
    rows = [(name, kind, get_human_readable_count(count).strip()) for name, kind, count
            in zip(summary.layer_names, summary.layer_types, summary.param_nums)
            if not name.startswith(metrics) and kind != "MetricCollection"]
    header = ("Name", "Type", "Params")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    lines = ["  ".join(value.ljust(width) if column < 2 else value.rjust(width)
                       for column, (value, width) in enumerate(zip(row, widths))) for row in [header, *rows]]
    trainable = summary.trainable_parameters
    frozen = summary.total_parameters - trainable
    lines.append(f"{get_human_readable_count(trainable).strip()} trainable parameters, "
                 f"{get_human_readable_count(frozen).strip()} frozen, {summary.model_size:.1f} MB")
    return "\n".join(lines)
