"""segkit's Lightning callbacks (conf/callbacks/default.yaml)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from segkit.resume import last_checkpoint_path


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


class StopOnNonFiniteLoss(Callback):
    """Stops training at the first NaN or infinite training loss, before its gradients reach the weights.

    The check runs before every backward pass (one device sync per step). Nothing is saved on the way
    out (ModelCheckpoint's `save_on_exception` is off), so the last checkpoint written before the bad
    step stays the one to resume from.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        last = last_checkpoint_path(trainer) or getattr(trainer.checkpoint_callback, "best_model_path", "")
        resume = (f"The last good checkpoint is {last}: resume from it with ckpt_path={last}" if last
                  else "No checkpoint was saved before it")
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {trainer.fit_loop.epoch_loop.batch_idx}); training stopped before the weights were updated with "
            f"it. {resume}. Usual causes: a learning rate too high (optimizer.lr), exploding gradients "
            "(+trainer.gradient_clip_val=1.0), or bad data (python -m segkit.data_check data=...)"
        )
