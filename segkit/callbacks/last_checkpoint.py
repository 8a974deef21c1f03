"""`last.ckpt`: the latest state of a run, written at every epoch end and when SIGTERM (preemption,
`kill`) or Ctrl+C stops training after the current batch; `ckpt_path=` resumes from it exactly."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

# The exit status of a process ended by SIGTERM, so schedulers see the run as interrupted, not done.
INTERRUPTED_EXIT_CODE = 128 + signal.SIGTERM


class LastCheckpoint(L.Callback):
    """Keeps `<dirpath>/last.ckpt` at the latest state of training.

    ModelCheckpoint's `save_last` only follows its top-k saves, so after an epoch that did not improve
    the monitored metric its last.ckpt is older than the run. This callback writes it at every epoch
    end, after validation, and when training is interrupted. Lightning already turns SIGTERM into a
    stop at the end of the current batch (on every rank); the first Ctrl+C does the same here (a second
    one aborts at once). The checkpoint holds the model, optimizer, scheduler and loop state at a batch
    boundary, so the resumed run repeats no batch and skips none.
    """

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self._previous_sigint: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._stop_after_batch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path, weights_only=False)  # resumable: optimizer and loops too

    def _stop_after_batch(self, signum: int, frame: FrameType | None) -> None:
        log.warning("Ctrl+C: stopping after this batch and saving a checkpoint; press it again to abort at once")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own graceful stop

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit" and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path, weights_only=False)  # resumable: optimizer and loops too
            if trainer.is_global_zero:
                log.warning(f"Interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved "
                            f"{self.path}; resume with ckpt_path={self.path}")


def last_checkpoint_path(trainer: L.Trainer) -> str | None:
    """The run's `last.ckpt`, once `LastCheckpoint` has written it."""
    return next((str(c.path) for c in trainer.callbacks if isinstance(c, LastCheckpoint) and c.path.exists()), None)
