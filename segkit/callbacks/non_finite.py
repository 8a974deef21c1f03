"""`StopOnNonFinite`: training stops, naming what and where, when anything it learns stops being finite."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from segkit.callbacks.last_checkpoint import last_checkpoint_path

USUAL_CAUSES = ("Usual causes: a learning rate too high (optimizer.lr), exploding gradients "
                "(trainer.gradient_clip_val=1.0), or bad data (python -m segkit.data_check data=...)")


class NonFiniteError(RuntimeError):
    """The training loss, a weight, a batch norm statistic or the validation loss became NaN or infinite; the
    message names what, the step, and the last good checkpoint."""


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None (one device sync)."""
    named = [(name, tensor) for name, tensor in tensors if tensor.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).cpu()
    return next((name for (name, _), ok in zip(named, finite.tolist()) if not ok), None)


class StopOnNonFinite(Callback):
    """Stops training when anything it learns stops being a finite number, before that state is saved:

    - before every backward pass, the training loss (one device sync per step), so a NaN never reaches the weights;
    - after every validation during fit, the validation loss, before ModelCheckpoint (always run last) saves;
    - before every checkpoint is written, every tensor of its `state_dict`: the weights and the batch norm running
      statistics, which a step can make infinite while its loss stays finite (`optimizer.lr=1e6`), since only
      evaluation uses them. Once per save: checking every tensor at every step would cost more than the step of a
      small model.

    Under DDP every rank takes the same decision (`reduce_boolean_decision`), so all stop together instead of one
    rank raising while the others wait in a collective. Nothing is saved on the way out (ModelCheckpoint's
    `save_on_exception` is off), so the last checkpoint written before the bad step stays the one to resume from.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss).all())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        loss_here = ("another process's training loss is not finite" if finite
                     else f"the training loss is {loss.item()}")
        raise NonFiniteError(
            f"{loss_here} at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{trainer.fit_loop.epoch_loop.batch_idx}); training stopped before the weights were updated with it. "
            f"{self._resume_hint(trainer)}. {USUAL_CAUSES}"
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or trainer.state.fn != "fit" or loss is None or torch.isfinite(loss):
            return  # the same on every rank: the module logs the loss of the whole set
        raise NonFiniteError(
            f"the validation loss is {loss.item()} after global step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}); training stopped before this state was saved. {self._resume_hint(trainer)}. "
            f"{USUAL_CAUSES}"
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = first_non_finite(checkpoint["state_dict"].items())
        if trainer.strategy.reduce_boolean_decision(bad is None, all=True):
            return
        raise NonFiniteError(
            f"{bad or 'a weight of another process'} holds NaN or infinite values after global step "
            f"{trainer.global_step} (epoch {trainer.current_epoch}); training stopped without saving that state. "
            f"{self._resume_hint(trainer)}. {USUAL_CAUSES}"
        )

    @staticmethod
    def _resume_hint(trainer: L.Trainer) -> str:
        # ModelCheckpoint names its new best file before writing it: only a file that exists is a good one.
        candidates = (last_checkpoint_path(trainer), getattr(trainer.checkpoint_callback, "best_model_path", None))
        last = next((path for path in candidates if path and Path(path).is_file()), None)
        return (f"The last good checkpoint is {last}: resume from it with ckpt_path={last}" if last
                else "No checkpoint was saved before it")
