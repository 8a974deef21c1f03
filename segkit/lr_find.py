"""python -m segkit.lr_find: the learning-rate range test (`segkit.lr_finder`) on the configured model and data;
writes lr_find.png and lr_find.json and prints the suggested lr.

    python -m segkit.lr_find model=dsc_segnet data=pets data.root=~/datasets
    python -m segkit.train lr_find=true ...        # find the lr, then train with it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from segkit.allocator import keep_freed_memory
from segkit.config import CONFIG_PATH
from segkit.loggers import close_loggers
from segkit.logs import report
from segkit.lr_finder import find_lr
from segkit.run import build


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


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="lr_find")
def main(cfg: DictConfig) -> float | None:
    keep_freed_memory()
    result = lr_find(cfg)
    return result["suggested_lr"] if result else None


if __name__ == "__main__":
    main()
