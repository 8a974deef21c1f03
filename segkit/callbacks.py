"""segkit's Lightning callbacks (conf/callbacks/default.yaml)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import update_bn

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


class RecomputeBatchNormStats(Callback):
    """Before each validation of a fit, recomputes every BatchNorm's running statistics with the current
    weights over `num_batches` batches of training images ("precise BN", as detectron2 and pycls do).

    Why: running statistics average the last ~10 steps, taken with older weights. While the weights still
    move fast (the first epochs, a small dataset with few steps per epoch, a run cut short before its
    learning rate decays) they lag so far that the eval-mode network predicts one class everywhere
    while the same weights in train mode already segment. The images are the datamodule's fixed,
    unaugmented calibration batches, so every process and a resumed run compute the same statistics.
    """

    def __init__(self, num_batches: int = 2) -> None:
        if num_batches < 1:
            raise ValueError(f"num_batches={num_batches}: expected at least 1 training batch")
        self.num_batches = num_batches

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        batches = trainer.datamodule.calibration_dataloader(self.num_batches)
        update_bn((images.to(pl_module.device) for images, _ in batches), pl_module)
