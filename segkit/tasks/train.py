"""What `segkit train` does: what a config builds (`build`: datamodule, module, trainer, loggers, test-time
augmentation), the training of it (`train`: fit, re-validate the best checkpoint, write metrics.json) and the
summary it prints."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from segkit.callbacks import last_checkpoint_path
from segkit.config import to_plain
from segkit.config.validate import validate
from segkit.data import SegmentationDataModule
from segkit.engine.distributed import end_job
from segkit.engine.loading import build_distillation
from segkit.engine.loggers import close_loggers, csv_metrics_path, log_run_summary, time_to_miou
from segkit.engine.lr_range_test import find_lr
from segkit.engine.metrics import format_metrics, split_metrics
from segkit.engine.module import SegmentationModule
from segkit.models import count_parameters
from segkit.models.summary import summarize
from segkit.runtime.tta import TestTimeAugmentation, build_tta, tta_settings
from segkit.tasks.run_log import report

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a config builds before training starts."""

    datamodule: SegmentationDataModule
    module: SegmentationModule
    trainer: L.Trainer
    loggers: list[Logger]
    # The final report's test-time augmentation (None: single views), built once, before anything else.
    tta: TestTimeAugmentation | None


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """One object per entry of a group of named configs (callbacks, logger); null entries are off."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def build(cfg: DictConfig) -> Run:
    """Builds the datamodule, module and trainer that `cfg` describes, without training."""
    # A bad tta or tta_scales fails before anything is built, also where lr_find and bench build without validate.
    tta = build_tta(cfg.get("tta"), cfg.get("tta_scales"))
    datamodule = instantiate(cfg.data)
    for key, value in datamodule.config_found_in_data().items():
        cfg.data[key] = value
    module = SegmentationModule(
        net=to_plain(cfg.model),
        num_classes=cfg.data.num_classes,
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.get("scheduler")),
        ignore_index=cfg.data.ignore_index,
        # A list of numbers, or the name of a weighting the module computes from the training masks.
        class_weights=cfg.loss.class_weights if isinstance(cfg.loss.class_weights, str)
        else to_plain(cfg.loss.class_weights),
        label_smoothing=cfg.loss.label_smoothing,
        dice_weight=cfg.loss.dice_weight,
        lovasz_weight=cfg.loss.lovasz_weight,
        class_names=list(datamodule.class_names),
        monitor=cfg.optimized_metric,
        channels_last=cfg.channels_last,
        micro_iou_classes=to_plain(cfg.metrics.micro_iou_classes),
    )
    module.distillation = build_distillation(to_plain(cfg.get("distill")), module.hparams.num_classes,
                                             cfg.data.ignore_index, cfg.get("trusted_targets") or ())
    module.segkit_config = to_plain(cfg)
    datamodule.use_normalisation_of(module.net)
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Run(datamodule, module, trainer, loggers, tta)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits the configured model and returns the validation metrics of its best checkpoint."""
    validate(cfg)  # a bad name or value fails here, before anything is built
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
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
        if cfg.lr_find and cfg.get("ckpt_path") is None:
            _apply_lr_finder(cfg, run, output_dir)
        # Only rank 0 writes files (DDP: every process runs train), after the LR finder so that
        # config.yaml holds the lr actually used.
        if trainer.is_global_zero:
            (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        for logger in run.loggers:
            logger.log_hyperparams({**to_plain(cfg), **efficiency})
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        # Read the paths before validating: loading a checkpoint restores the callback's older state.
        checkpoint = trainer.checkpoint_callback
        best_checkpoint = (checkpoint.best_model_path or None) if checkpoint else None
        last_checkpoint = last_checkpoint_path(trainer)
        # Report the checkpoint a user will ship, not the last epoch: validate the best one once more. That is no
        # epoch of training, so the loggers do not get it (their curves end at the last epoch): metrics.json and
        # the wandb run's summary report it.
        trainer.loggers = []
        results = trainer.validate(run.module, datamodule=run.datamodule, ckpt_path=best_checkpoint, verbose=False,
                                   weights_only=True)[0]
        # With test-time augmentation the run reports the best checkpoint's figures with it too. Only here: the
        # validations of training stay single views, cheap, and pick the best checkpoint on them.
        tta = run.tta
        without_tta = None
        if tta is not None:
            without_tta, run.module.test_time_augmentation = results, tta
            results = trainer.validate(run.module, datamodule=run.datamodule, ckpt_path=best_checkpoint,
                                       verbose=False, weights_only=True)[0]
        log_run_summary(run.loggers, {**results, **efficiency, "best_checkpoint": best_checkpoint})
    finally:
        close_loggers(run.loggers)
    end_job(trainer)
    metrics_csv = csv_metrics_path(run.loggers)
    reached = (time_to_miou(metrics_csv, list(cfg.metrics.time_to_miou)) if metrics_csv is not None and
               metrics_csv.is_file() and cfg.metrics.get("time_to_miou") else None)
    metrics = {
        **split_metrics(results, run.module.class_names, "val"),
        **efficiency,
        "best_checkpoint": best_checkpoint,
        "last_checkpoint": last_checkpoint,
        "epochs": trainer.current_epoch,
        # When val/miou first reached each of metrics.time_to_miou (null: no CSV logger, or not asked for).
        "time_to_val_miou": reached,
        **tta_settings(tta),
        **({"without_tta": split_metrics(without_tta, run.module.class_names, "val")} if without_tta else {}),
        "skipped_samples": run.datamodule.skipped,  # bad files passed over with data.on_bad_sample=skip
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        report(_summary(cfg.model.name, type(run.datamodule).__name__, metrics, tta, metrics_path))
    return metrics


def _apply_lr_finder(cfg: DictConfig, run: Run, output_dir: Path) -> None:
    """Range-tests the lr and trains with the suggestion (config, module and logs say so)."""
    result = find_lr(run.trainer, run.module, run.datamodule, cfg.lr_finder, output_dir)
    if result is None or result["suggested_lr"] is None:
        log.warning("lr_find=true: no suggestion (fast_dev_run or too few steps); training with lr=%s", cfg.optimizer.lr)
        return
    log.info("lr_find=true: training with the suggested lr %.3g instead of %s", result["suggested_lr"], cfg.optimizer.lr)
    cfg.optimizer.lr = result["suggested_lr"]
    run.module.hparams.optimizer["lr"] = result["suggested_lr"]
    run.module.segkit_config["optimizer"]["lr"] = result["suggested_lr"]  # the checkpoints' config says what ran


def _reached_line(reached: dict[str, dict[str, float] | None]) -> str:
    return ", ".join(f"{threshold} after {when['minutes']:.1f} min (epoch {when['epochs']})" if when else
                     f"{threshold} not reached" for threshold, when in reached.items())


def _summary(model_name: str, data_name: str, metrics: dict[str, Any], tta: TestTimeAugmentation | None,
             metrics_path: Path) -> str:
    macs = f", {metrics['macs'] / 1e9:.2f} GMACs at {'x'.join(map(str, metrics['macs_image_size']))}" if "macs" in metrics else ""
    skipped = metrics["skipped_samples"]
    skipped_lines = [f"  skipped {sum(skipped.values())} bad samples {skipped}: see the warnings in the log"]
    tta_note = f"   (test-time augmentation: {tta.overrides()})" if "without_tta" in metrics else ""
    return "\n".join(
        [
            f"segkit: {model_name} on {data_name}, {metrics['epochs']} epochs, {metrics['params']:,} parameters{macs}",
            f"  {format_metrics(metrics, 'val')}{tta_note}",
            *([f"  without test-time augmentation: {format_metrics(metrics['without_tta'], 'val')}"] if tta_note
              else []),
            *(skipped_lines if any(skipped.values()) else []),
            *([f"  val/miou first reached {_reached_line(metrics['time_to_val_miou'])}"]
              if metrics["time_to_val_miou"] else []),
            f"  best checkpoint: {metrics['best_checkpoint']}" if metrics["best_checkpoint"] else
            "  no best checkpoint (no epoch validated, or no model_checkpoint callback): the figures are the last "
            f"weights', saved as {metrics['last_checkpoint']}",
            f"  metrics: {metrics_path}",
        ]
    )
