"""What `segkit lr_find` does: the learning-rate range test (`segkit.engine.lr_range_test`) on the configured
model and data, without training; writes lr_find.png and lr_find.json and prints the suggested lr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from segkit.engine.loggers import close_loggers
from segkit.engine.lr_range_test import find_lr
from segkit.tasks.run_log import report
from segkit.tasks.train import build


def lr_find(cfg: DictConfig) -> dict[str, Any] | None:
    """Builds the configured run and range-tests it, without training."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    with open_dict(cfg):
        cfg.logger = None  # nothing is trained: no logger, and no empty csv/ folder
    run = build(cfg)
    try:
        result = find_lr(run.trainer, run.module, run.datamodule, cfg.lr_finder, output_dir)
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
