"""What a run prints and what its log file (`<run dir>/<command>.log`, e.g. train.log) keeps.

- `RunLog`, a Hydra callback of every command (conf/hydra/default.yaml): Python warnings go through logging, so
  the log file keeps them; the error of a failed run goes to the log file with its traceback, and an ordinary
  user error (a bad value, file or checkpoint) prints one clear message on the console and exits 1.
- The callbacks `segkit.callbacks.EpochLog` (one line of metrics per epoch) and `segkit.callbacks.ModelSummary`
  (Lightning's summary without metric modules and FLOPs) write into the same log.
- `LightningTipFilter`: drops Lightning's advertising tips (conf/hydra/default.yaml puts it on Lightning's logger).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from segkit.checkpoints import CheckpointError
from segkit.runtime.images import DataError
from segkit.utilities.checks import ConfigError

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
