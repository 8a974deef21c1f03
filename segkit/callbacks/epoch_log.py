"""`EpochLog`: one line of metrics per epoch in the log, the record a non-interactive console (nohup, SLURM) lacks,
where the progress bar prints only its last state."""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class EpochLog(L.Callback):
    """Logs one line per epoch: the epoch, every scalar metric but per-class IoUs (the CSV and metrics.json hold
    those) and the epoch's duration, e.g.
    `epoch 2/5  lr/group0 0.0009  train/acc 0.71  train/loss_epoch 0.8312  train/miou 0.512  val/acc 0.74 ...  (41 s)`.

    The line is written when the next epoch starts or training ends: the module logs the epoch's training metrics
    in its own `on_train_epoch_end`, which Lightning calls after the callbacks' one. An epoch that did not validate
    (`trainer.check_val_every_n_epoch` > 1) has no `val/` metrics in its line: Lightning's callback metrics still
    hold the last validation's.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._ended: tuple[int, float] | None = None  # (epoch, seconds) of the epoch whose line is due
        self._validated_epoch: int | None = None

    @rank_zero_only
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_ended_epoch(trainer)
        self._started = time.monotonic()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = (trainer.current_epoch, time.monotonic() - self._started)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_ended_epoch(trainer)

    def _log_ended_epoch(self, trainer: L.Trainer) -> None:
        if self._ended is None:
            return
        epoch, seconds = self._ended
        self._ended = None
        metrics = {name: float(value) for name, value in sorted(trainer.callback_metrics.items())
                   if value.numel() == 1 and "/iou_" not in name and not name.endswith("_step")
                   and (epoch == self._validated_epoch or not name.startswith("val/"))}
        values = "  ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s  %s  (%.0f s)", epoch + 1, total, values, seconds)
