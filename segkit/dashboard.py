"""The Weights & Biases dashboard of a run (`logger=wandb`).

- `wandb_logger` builds Lightning's WandbLogger with segkit's defaults: in a Hydra multirun the runs of
  one sweep share a group (the sweep folder's name) and each is named by its job's overrides; a run
  resumed from a checkpoint that a wandb run wrote logs into that same wandb run.
- `WandbDashboard`, a callback, logs each validation epoch a fixed panel of validation images (input |
  truth | prediction, in the dataset's colours), the confusion matrix and a per-class IoU table, and
  stores the wandb run id in every checkpoint. It does nothing without a WandbLogger, and only on rank 0.
- `log_run_summary` puts values (parameters, MACs, the final metrics) in the run's summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from segkit.checkpoints import read_checkpoint
from segkit.data import SegmentationDataModule
from segkit.data.palettes import ids_to_colours
from segkit.figures import denormalise
from segkit.module import SegmentationModule

if TYPE_CHECKING:  # imported where used: wandb takes about a second to import, and CSV runs never need it
    import wandb

# Where a checkpoint keeps the id of the wandb run that wrote it.
RUN_ID_KEY = "wandb_run_id"


def wandb_logger(
    name: str | None = None,
    group: str | None = None,
    id: str | None = None,  # noqa: A002 - WandbLogger's and wandb.init's name for it
    resume_from: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """Lightning's WandbLogger (`kwargs` are its arguments and wandb.init's). Unless given:

    - `group` and `name`: in a Hydra multirun, the sweep folder's name and the job's overrides
      (`hydra.job.override_dirname`); in a single run no group and wandb's own run name.
    - `id`: the wandb run id stored in the checkpoint `resume_from` (the run's `ckpt_path`), so the
      resumed training continues that run (WandbLogger resumes with `resume="allow"`).
    """
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        group = group or Path(hydra_cfg.sweep.dir).name
        name = name or hydra_cfg.job.override_dirname or None
    if id is None and resume_from is not None:
        id = run_id_in_checkpoint(resume_from)  # noqa: A001
    return WandbLogger(name=name, group=group, id=id, **kwargs)


def run_id_in_checkpoint(path: str | Path) -> str | None:
    """The id of the wandb run that wrote the checkpoint at `path`, or None if none did or there is no such
    file (Lightning's own `ckpt_path` values, such as "last", and its error for a missing file then apply)."""
    if not Path(path).is_file():
        return None
    return read_checkpoint(path, mmap=True).get(RUN_ID_KEY)


@rank_zero_only
def log_run_summary(loggers: Sequence[Logger], values: Mapping[str, Any]) -> None:
    """Puts `values` in the summary of every wandb run among `loggers` (the numbers a run table shows)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(values))


def draw_panel(
    images: torch.Tensor,
    masks: torch.Tensor,
    predictions: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    colormap: np.ndarray,
    ignore_index: int,
) -> np.ndarray:
    """One row per sample, input | truth | prediction: an (N * H) x (3 * W) x 3 uint8 image.

    `images` are normalised N x 3 x H x W tensors (undone with `mean` and `std`, on the 0..1 scale);
    `masks` and `predictions` N x H x W class ids, drawn in `colormap` (ignored pixels in VOC's border
    colour).
    """
    inputs = denormalise(images, mean, std)
    truths = ids_to_colours(masks.cpu().numpy(), colormap, ignore_index)
    predicted = ids_to_colours(predictions.cpu().numpy(), colormap, ignore_index)
    rows = np.concatenate([inputs, truths, predicted], axis=2)  # N x H x 3W x 3
    return rows.reshape(-1, *rows.shape[2:])


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
