"""python -m segkit.train: trains a model on a dataset, both chosen by config, and writes metrics.json.

    python -m segkit.train                                  # dsc_segnet on the built-in shapes data
    python -m segkit.train model=segnet trainer.max_epochs=1 optimizer.lr=0.01
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from segkit.config import CONFIG_DIR, to_plain
from segkit.data import SegmentationDataModule
from segkit.models import count_parameters
from segkit.module import SegmentationModule
from segkit.summary import summarize
from segkit.validate import validate


@dataclass
class Run:
    """Everything a config builds before training starts."""

    datamodule: SegmentationDataModule
    module: SegmentationModule
    trainer: L.Trainer
    loggers: list[Logger]


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """One object per entry of a group of named configs (callbacks, logger); null entries are off."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def build(cfg: DictConfig) -> Run:
    """Builds the datamodule, module and trainer that `cfg` describes, without training."""
    datamodule = instantiate(cfg.data)
    module = SegmentationModule(
        net=to_plain(cfg.model),
        num_classes=cfg.data.num_classes,
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.get("scheduler")),
        ignore_index=cfg.data.ignore_index,
        class_weights=to_plain(cfg.loss.class_weights),
        class_names=list(datamodule.class_names),
        monitor=cfg.optimized_metric,
        channels_last=cfg.channels_last,
        micro_iou_classes=to_plain(cfg.metrics.micro_iou_classes),
    )
    if datamodule.mean is None:
        datamodule.mean, datamodule.std = module.net.input_mean, module.net.input_std
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Run(datamodule, module, trainer, loggers)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits the configured model and returns the validation metrics of its best checkpoint."""
    validate(cfg)  # a bad name or value fails here, before anything is built
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    run = build(cfg)
    trainer = run.trainer
    image_size = cfg.data.get("image_size")
    efficiency = {"params": count_parameters(run.module.net)}
    if image_size is not None:
        efficiency["macs"] = summarize(run.module.net, image_size)["macs"]
        efficiency["macs_image_size"] = list(image_size)
    try:
        for logger in run.loggers:
            logger.log_hyperparams({**to_plain(cfg), **efficiency})
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        # Read the paths before validating: loading a checkpoint restores the callback's older state.
        checkpoint = trainer.checkpoint_callback
        best_checkpoint = (checkpoint.best_model_path or None) if checkpoint else None
        last_checkpoint = (checkpoint.last_model_path or None) if checkpoint else None
        # Report the checkpoint a user will ship, not the last epoch: validate the best one once more.
        results = trainer.validate(run.module, datamodule=run.datamodule, ckpt_path=best_checkpoint, verbose=False,
                                   weights_only=True)[0]
    finally:
        _close(run.loggers)
    per_class = {name: results.pop(f"val/iou_{name}") for name in run.module.class_names}
    metrics = {
        **results,  # val/miou, val/acc, val/loss (and val/micro_iou when configured)
        "val/iou_per_class": per_class,
        **efficiency,
        "best_checkpoint": best_checkpoint,
        "last_checkpoint": last_checkpoint,
        "epochs": trainer.current_epoch,
        "skipped_samples": run.datamodule.skipped,  # bad files passed over with data.on_bad_sample=skip
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        print(_summary(cfg.model.name, type(run.datamodule).__name__, metrics, metrics_path))
    return metrics


def _close(loggers: list[Logger]) -> None:
    """Ends the wandb run, so its files are complete and the next run of a sweep starts a new one."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


def _summary(model_name: str, data_name: str, metrics: dict[str, Any], metrics_path: Path) -> str:
    per_class = ", ".join(f"{name} {iou:.3f}" for name, iou in metrics["val/iou_per_class"].items())
    micro = f"   val/micro_iou {metrics['val/micro_iou']:.4f}" if "val/micro_iou" in metrics else ""
    macs = f", {metrics['macs'] / 1e9:.2f} GMACs at {'x'.join(map(str, metrics['macs_image_size']))}" if "macs" in metrics else ""
    skipped = metrics["skipped_samples"]
    skipped_lines = [f"  skipped {sum(skipped.values())} bad samples {skipped}: see the warnings in the log"]
    return "\n".join(
        [
            f"segkit: {model_name} on {data_name}, {metrics['epochs']} epochs, {metrics['params']:,} parameters{macs}",
            f"  val/miou {metrics['val/miou']:.4f}   val/acc {metrics['val/acc']:.4f}{micro}   IoU: {per_class}",
            *(skipped_lines if any(skipped.values()) else []),
            f"  best checkpoint: {metrics['best_checkpoint']}",
            f"  metrics: {metrics_path}",
        ]
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
