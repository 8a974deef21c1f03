"""`TensorBoardFigures`: segkit.eval's figures (confusion matrix, IoU per class, a gallery) in TensorBoard after
each validation of a fit (`logger=tensorboard`)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from segkit.engine.figures import close, result_figures, stored_samples_with_predictions
from segkit.engine.module import SegmentationModule


class TensorBoardFigures(L.Callback):
    """After each validation of a fit (sanity check excluded), adds to every TensorBoardLogger the confusion
    matrix, the IoU per class and a gallery of the first `num_images` validation images at their stored size
    (`val/...` figures, at the global step of the epoch's metrics). Does nothing without a TensorBoardLogger or
    off rank 0."""

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 0:
            raise ValueError(f"callbacks.tensorboard_figures.num_images must be >= 0, got {num_images}")
        self.num_images = num_images

    def on_validation_end(self, trainer: L.Trainer, pl_module: SegmentationModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        datamodule = trainer.datamodule
        names = pl_module.class_names
        ious = {name: float(trainer.callback_metrics[f"val/iou_{name}"]) for name in names}
        samples = (stored_samples_with_predictions(pl_module, datamodule.val_set, datamodule.val_collate,
                                                   self.num_images) if self.num_images else None)
        figures = result_figures(pl_module.confusion_matrices["val"].cpu(), ious,
                                 float(trainer.callback_metrics["val/miou"]), samples, datamodule, names)
        for name, figure in figures.items():
            for logger in loggers:
                logger.experiment.add_figure(f"val/{name}", figure, global_step=trainer.global_step, close=False)
            close(figure)
