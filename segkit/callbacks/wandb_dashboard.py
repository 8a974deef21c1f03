"""The Weights & Biases dashboard of a run (`logger=wandb`): `WandbDashboard`, a callback, logs each validation
epoch a table of fixed validation images (image | truth | prediction, at each image's own size, in the dataset's
colours), the confusion matrix and a per-class IoU table, and stores the wandb run id in every checkpoint. It
does nothing without a WandbLogger, and only on rank 0. The logger itself: `segkit.engine.loggers.wandb_logger`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from segkit.data import SegmentationDataModule
from segkit.data.palettes import ids_to_colours
from segkit.engine.figures import stored_samples_with_predictions
from segkit.engine.loggers import RUN_ID_KEY
from segkit.engine.module import SegmentationModule

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


def fit_within(picture: np.ndarray, longest_side: int, resample: Image.Resampling) -> np.ndarray:
    """`picture` scaled down, aspect ratio kept, so that its longer side is at most `longest_side` pixels."""
    height, width = picture.shape[:2]
    scale = longest_side / max(height, width)
    if scale >= 1:
        return picture
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(picture).resize(size, resample))


def examples_table(samples: tuple[list, list, list], datamodule: SegmentationDataModule, class_names: Sequence[str],
                   longest_side: int) -> wandb.Table:
    """One row per sample: its index in the split, the image with the truth and the prediction as wandb's
    interactive mask layers (classes named, each can be toggled), then truth and prediction in the dataset's
    colours, each picture at the image's own aspect ratio."""
    import wandb

    labels: Mapping[int, str] = {**dict(enumerate(class_names)), datamodule.ignore_index: "ignored"}
    table = wandb.Table(columns=["sample", "image", "truth", "prediction"])
    for index, (image, truth, prediction) in enumerate(zip(*samples)):
        image = fit_within(image, longest_side, Image.Resampling.BILINEAR)
        truth, prediction = (fit_within(mask.astype(np.uint8), longest_side, Image.Resampling.NEAREST)
                             for mask in (truth, prediction))
        layers = {"ground_truth": {"mask_data": truth, "class_labels": labels},
                  "prediction": {"mask_data": prediction, "class_labels": labels}}
        coloured = (ids_to_colours(mask, datamodule.colormap, datamodule.ignore_index) for mask in (truth, prediction))
        table.add_data(index, wandb.Image(image, masks=layers), *(wandb.Image(picture) for picture in coloured))
    return table


class WandbDashboard(L.Callback):
    """Logs to the run's WandbLogger, after each validation epoch (sanity check excluded):

    - `val/examples`: a table of the first `num_images` validation images, the same every epoch, one row each:
      the image (with truth and prediction as wandb mask layers) | truth | prediction, masks in the dataset's
      colours. Images are shown as stored, at their own aspect ratio (scaled down to at most `longest_side`
      pixels), not at the size the network is fed; the prediction is resized back to it as segkit.predict does.
    - `val/confusion_matrix`: the module's confusion matrix of the epoch (pixels, rows truth), as
      wandb's confusion-matrix chart.
    - `val/iou_table`: per class, its IoU (as the module logged it) and its pixels in the truth.

    It stores the wandb run id in every checkpoint (`wandb_run_id`), which `wandb_logger` reads back
    when training resumes. Without a WandbLogger, or off rank 0, it does nothing.
    """

    def __init__(self, num_images: int = 4, longest_side: int = 512) -> None:
        if num_images < 0:
            raise ValueError(f"callbacks.wandb_dashboard.num_images must be >= 0, got {num_images}")
        if longest_side < 1:
            raise ValueError(f"callbacks.wandb_dashboard.longest_side must be >= 1, got {longest_side}")
        self.num_images = num_images
        self.longest_side = longest_side
        self.logger: WandbLogger | None = None

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

    def on_validation_end(self, trainer: L.Trainer, pl_module: SegmentationModule) -> None:
        if self.logger is None or not trainer.is_global_zero or trainer.sanity_checking:
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
        if self.num_images:
            datamodule = trainer.datamodule
            samples = stored_samples_with_predictions(pl_module, datamodule.val_set, datamodule.val_collate,
                                                      self.num_images)
            logged["val/examples"] = examples_table(samples, datamodule, names, self.longest_side)
        # No step given: wandb fills in trainer/global_step of the epoch's metrics, logged just before.
        self.logger.experiment.log(logged)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.logger is not None and self.logger.version is not None:
            checkpoint[RUN_ID_KEY] = self.logger.version
