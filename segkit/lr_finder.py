"""The learning-rate range test (Lightning's `Tuner.lr_find`, fastai style) on a built run's model and data;
writes lr_find.png and lr_find.json. Run by `python -m segkit.lr_find` and by `segkit.train lr_find=true`:

    python -m segkit.lr_find model=dsc_segnet data=pets data.root=~/datasets
    python -m segkit.train lr_find=true ...        # find the lr, then train with it

The lr grows exponentially from `lr_finder.min_lr` to `lr_finder.max_lr` over `lr_finder.num_training`
batches, or until the loss diverges; the suggestion is the lr of the steepest descent of the smoothed loss
(segkit.lr_range: how it is read and plotted; docs/lr_find.md: how good it is). The model and optimizer are
restored afterwards, so training starts from the same weights whether or not the finder ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner

from segkit.lr_range import analyse, plot
from segkit.module import SegmentationModule


def find_lr(trainer: L.Trainer, module: SegmentationModule, datamodule: L.LightningDataModule,
            settings: Mapping[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """Runs the range test on `module` and `datamodule` with `trainer`, and writes its plot and curve to `output_dir`.

    Returns what lr_find.json holds, or None when Lightning skips the test (`fast_dev_run`).
    """
    fit_loop = trainer.fit_loop
    max_epochs = fit_loop.max_epochs
    fit_loop.max_epochs = -1  # num_training steps, however many epochs of a small dataset they take
    try:
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=settings["min_lr"],
            max_lr=settings["max_lr"],
            num_training=settings["num_training"],
            early_stop_threshold=settings["early_stop_threshold"],
            update_attr=False,  # the lr lives in the optimizer config; the caller applies it
        )
    finally:
        fit_loop.max_epochs = max_epochs
    if finder is None:
        return None
    # The test's batches went through the metric collections; they must not count in epoch 0.
    for metrics in (module.train_metrics, module.val_metrics):
        metrics.reset()
    test = analyse(finder.results["lr"], finder.results["loss"], skip_begin=settings["skip_begin"])
    result = {
        "min_lr": settings["min_lr"],
        "max_lr": settings["max_lr"],
        "num_training": settings["num_training"],
        "steps_run": len(finder.results["lr"]),
        **test.to_json(),  # suggested_lr, lr, loss (raw), smoothed_loss and what the suggestion skipped
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(test, output_dir / "lr_find.png")
    return result
