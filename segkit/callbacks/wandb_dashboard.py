"""The Weights & Biases dashboard of a run (`logger=wandb`): `WandbDashboard`, a callback, logs each validation
epoch a fixed panel of validation images (input | truth | prediction, in the dataset's colours), the confusion
matrix and a per-class IoU table, and stores the wandb run id in every checkpoint. It does nothing without a
WandbLogger, and only on rank 0. The logger itself: `segkit.loggers.wandb_logger`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from segkit.data import SegmentationDataModule
from segkit.loggers import RUN_ID_KEY
from segkit.module import SegmentationModule
from segkit.figures import draw_panel

if TYPE_CHECKING:  # imported where used: wandb takes about a second to import, and CSV runs never need it
    import wandb


def confusion_matrix_chart(confmat: torch.Tensor, class_names: Sequence[str]) -> wandb.plot.CustomChart:
    """wandb's confusion-matrix chart (the one `wandb.plot.confusion_matrix` draws) from a C x C matrix of
    counts, rows truth, rather than from every prediction."""
    import wandb

    names = list(enumerate(class_names))
    rows = [[truth, predicted, int(confmat[t, p])] for t, truth in names for p, predicted in names]
    return wandb.plot.plot_table(
        "wandb/confusion_matrix/v1",
        wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows),
        {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
        {"title": "Validation pixels: truth (rows) against prediction"},
    )


class WandbDashboard(L.Callback):
    """Logs to the run's WandbLogger, after each validation epoch (sanity check excluded):

    - `val/examples`: the first `num_images` validation images, the same every epoch, one row each:
      input | truth | prediction, masks in the dataset's colours. Taken from the validation batches as
      they pass, so no extra pass over the data.
    - `val/confusion_matrix`: the module's confusion matrix of the epoch (pixels, rows truth), as
      wandb's confusion-matrix chart.
    - `val/iou_table`: per class, its IoU (as the module logged it) and its pixels in the truth.

    It stores the wandb run id in every checkpoint (`wandb_run_id`), which `wandb_logger` reads back
    when training resumes. Without a WandbLogger, or off rank 0, it does nothing.
    """

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 0:
            raise ValueError(f"callbacks.wandb_dashboard.num_images must be >= 0, got {num_images}")
        self.num_images = num_images
        self.logger: WandbLogger | None = None
        # (image, mask, prediction) of the panel's samples, this epoch.
        self._kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.logger = next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)
        if self.logger is None:
            return
        if not isinstance(trainer.datamodule, SegmentationDataModule) or not isinstance(pl_module, SegmentationModule):
            raise TypeError(
                "WandbDashboard draws with a SegmentationDataModule's colormap and normalisation and reads a "
                f"SegmentationModule's confusion matrix; got {type(trainer.datamodule).__name__} and "
                f"{type(pl_module).__name__}"
            )

    def _active(self, trainer: L.Trainer) -> bool:
        return self.logger is not None and trainer.is_global_zero and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._kept = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: torch.Tensor,
        batch: tuple[torch.Tensor, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        missing = self.num_images - len(self._kept)
        if missing <= 0 or not self._active(trainer):
            return
        images, masks = batch
        self._kept.extend(zip(images[:missing].cpu(), masks[:missing].cpu(), outputs[:missing].cpu()))

    def on_validation_end(self, trainer: L.Trainer, pl_module: SegmentationModule) -> None:
        if not self._active(trainer):
            return
        import wandb

        names = pl_module.class_names
        confmat = pl_module.confusion_matrices["val"].cpu()
        ious = [float(trainer.callback_metrics[f"val/iou_{name}"]) for name in names]
        logged: dict[str, Any] = {
            "val/confusion_matrix": confusion_matrix_chart(confmat, names),
            "val/iou_table": wandb.Table(
                columns=["class", "iou", "pixels"],
                data=[[name, iou, int(pixels)] for name, iou, pixels in zip(names, ious, confmat.sum(1))],
            ),
        }
        if self._kept:
            logged["val/examples"] = wandb.Image(self._panel(trainer.datamodule), caption="input | truth | prediction")
        # No step given: wandb fills in trainer/global_step of the epoch's metrics, logged just before.
        self.logger.experiment.log(logged)

    def _panel(self, datamodule: SegmentationDataModule) -> np.ndarray:
        # Samples from batches of whole images of different sizes: padded to one size as batches are.
        images, masks = datamodule.val_collate([(image, mask) for image, mask, _ in self._kept])
        _, predictions = datamodule.val_collate([(image, prediction) for image, _, prediction in self._kept])
        mean, std = datamodule.normalisation
        return draw_panel(images, masks, predictions, mean, std, datamodule.colormap, datamodule.ignore_index)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.logger is not None and self.logger.version is not None:
            checkpoint[RUN_ID_KEY] = self.logger.version
