"""`RecomputeBatchNormStats`: precise BatchNorm statistics before each validation of a fit."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import update_bn


class RecomputeBatchNormStats(Callback):
    """Before each validation of a fit, recomputes every BatchNorm's running statistics with the current
    weights over the first `num_images` training images ("precise BN", as detectron2 and pycls do), batched as
    training batches them. A count of images, as pycls's, so that a change of batch size leaves it alone.

    Why: running statistics average the last ~10 steps, taken with older weights. While the weights still
    move fast (the first epochs, a small dataset with few steps per epoch, a run cut short before its
    learning rate decays) they lag so far that the eval-mode network predicts one class everywhere
    while the same weights in train mode already segment. The images are the datamodule's fixed,
    unaugmented calibration batches, so every process and a resumed run compute the same statistics.
    """

    def __init__(self, num_images: int = 16) -> None:
        if num_images < 1:
            raise ValueError(f"num_images={num_images}: expected at least 1 training image")
        self.num_images = num_images

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        batches = trainer.datamodule.calibration_dataloader(self.num_images)
        update_bn((images.to(pl_module.device) for images, _ in batches), pl_module)
