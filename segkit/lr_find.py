"""python -m segkit.lr_find: the learning-rate range test (Lightning's `Tuner.lr_find`, fastai style) on
the configured model and data; writes lr_find.png and lr_find.json and prints the suggested lr.

    python -m segkit.lr_find model=dsc_segnet data=pets data.root=~/datasets
    python -m segkit.train lr_find=true ...        # find the lr, then train with it

The lr grows exponentially from `lr_finder.min_lr` to `lr_finder.max_lr` over `lr_finder.num_training`
batches, or until the loss diverges; the suggestion is the lr of the steepest descent of the smoothed loss
(segkit.lr_range: how it is read and plotted; docs/lr_find.md: how good it is). The model and optimizer are restored
afterwards, so training starts from the same weights whether or not the finder ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import lightning as L
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf, open_dict

from segkit.config import CONFIG_DIR
from segkit.logs import report
from segkit.lr_range import analyse, plot

if TYPE_CHECKING:
    from segkit.train import Run


def find_lr(run: Run, settings: Mapping[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """Runs the range test on `run`'s module and data and writes its plot and curve to `output_dir`.

    Returns what lr_find.json holds, or None when Lightning skips the test (`fast_dev_run`).
    """
    fit_loop = run.trainer.fit_loop
    max_epochs = fit_loop.max_epochs
    fit_loop.max_epochs = -1  # num_training steps, however many epochs of a small dataset they take
    try:
        finder = Tuner(run.trainer).lr_find(
            run.module,
            datamodule=run.datamodule,
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
    for metrics in (run.module.train_metrics, run.module.val_metrics):
        metrics.reset()
    test = analyse(finder.results["lr"], finder.results["loss"], skip_begin=settings["skip_begin"])
    result = {
        "min_lr": settings["min_lr"],
        "max_lr": settings["max_lr"],
        "num_training": settings["num_training"],
        "steps_run": len(finder.results["lr"]),
        **test.to_json(),  # suggested_lr, lr, loss (raw), smoothed_loss and what the suggestion skipped
    }
    if run.trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(test, output_dir / "lr_find.png")
    return result


def lr_find(cfg: DictConfig) -> dict[str, Any] | None:
    """Builds the configured run and range-tests it, without training."""
    from segkit.train import build, close_loggers  # train imports this module for `lr_find=true`

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    with open_dict(cfg):
        cfg.logger = None  # nothing is trained: no logger, and no empty csv/ folder
    run = build(cfg)
    try:
        result = find_lr(run, cfg.lr_finder, output_dir)
    finally:
        close_loggers(run.loggers)
    if result is None:
        report("segkit: the LR finder does not run under fast_dev_run")
    elif run.trainer.is_global_zero:
        suggested = (f"suggested lr {result['suggested_lr']:.3g}" if result["suggested_lr"] is not None
                     else "no suggestion (too few steps before the loss's minimum)")
        last_lr = result["lr"][-1]
        report(f"segkit: {suggested} (configured: {cfg.optimizer.lr}); smoothed loss lowest at lr "
               f"{result['minimum_loss_lr']:.3g}; {result['steps_run']} steps from {result['min_lr']:g} to "
               f"{last_lr:.3g}{' (stopped: the loss diverged)' if result['steps_run'] < result['num_training'] else ''}\n"
               f"  plot: {output_dir / 'lr_find.png'}\n  curve: {output_dir / 'lr_find.json'}")
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="lr_find")
def main(cfg: DictConfig) -> float | None:
    result = lr_find(cfg)
    return result["suggested_lr"] if result else None


if __name__ == "__main__":
    main()
