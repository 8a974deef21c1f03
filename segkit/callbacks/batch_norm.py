"""`RecomputeBatchNormStats`: precise BatchNorm statistics before each validation of a fit."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import update_bn


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
