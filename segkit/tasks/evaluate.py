"""Evaluating a trained model (`python -m segkit.eval`): the metrics of a checkpoint, or of an ONNX export run by
onnxruntime, on a split of its data or of another dataset with the same classes, written to metrics.json.

The model and its training config come from the checkpoint: only the data (`data=...`, `data.*`), the
paths and the trainer's accelerator, devices and precision can be set on the command line (`check_overrides`).
Besides metrics.json it writes confusion_matrix.png and iou_per_class.png, and with `show=N` gallery.png
(segkit.engine.figures).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.checkpoints import read_training_config
from segkit.data import SegmentationDataModule
from segkit.engine.figures import write_evaluation_figures
from segkit.engine.loading import load_module
from segkit.engine.metrics import format_metrics, split_metrics
from segkit.engine.module import SegmentationModule
from segkit.engine.onnx_net import onnx_module
from segkit.runtime.tta import build_tta, tta_settings
from segkit.tasks.run_log import report

log = logging.getLogger(__name__)

MODEL_KEYS = ("ckpt_path", "onnx_path")
OVERRIDABLE_KEYS = {"data", "trusted_targets", "paths", "trainer.accelerator", "trainer.devices",
                    "trainer.precision", "show", "tta", "tta_scales"}
OVERRIDABLE_PREFIXES = ("data.", "paths.", "hydra.", "hydra/")


def check_overrides(overrides: Sequence[str]) -> tuple[str, str]:
    """Refuses command-line overrides of anything but the data, paths and devices, since the model and
    its training settings come from the checkpoint (or the ONNX file); returns which of `ckpt_path` and
    `onnx_path` the overrides give, and its value."""
    models: dict[str, str] = {}
    data_chosen = False
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in MODEL_KEYS:
            if override.is_sweep_override():
                raise ValueError(f"{override.input_line}: segkit.eval evaluates one model per command")
            models[key] = str(override.value())
        elif key not in OVERRIDABLE_KEYS and not key.startswith(OVERRIDABLE_PREFIXES):
            raise ValueError(
                f"cannot override {key!r} ({override.input_line}): the model and its training settings come from "
                "the checkpoint. segkit.eval takes data=..., data.*, ckpt_path or onnx_path, show, tta, tta_scales, "
                "trusted_targets, paths.*, trainer.accelerator, trainer.devices, trainer.precision and hydra.*"
            )
        data_chosen |= key == "data"
    if len(models) != 1:
        raise ValueError("one of ckpt_path=... (the checkpoint to evaluate) and onnx_path=... (an export of "
                         "segkit.export) is required" + (f", not both: {models}" if models else ""))
    ((key, path),) = models.items()
    if key == "onnx_path" and not data_chosen:
        raise ValueError(f"onnx_path={path}: name the data to evaluate on with data=<dataset> (data=pets, "
                         f"data.root=...); an ONNX file carries no data config")
    return key, path


def register_checkpoint_data(ckpt_path: str | Path, trusted_targets: Sequence[str] = ()) -> None:
    """Makes the checkpoint's resolved data config the option `checkpoint` of the data group, which
    conf/eval.yaml selects by default; Hydra then applies `data.*` overrides to it. A checkpoint naming
    targets outside segkit's and `trusted_targets` is refused first (`segkit.checkpoints.trust`)."""
    data = read_training_config(ckpt_path, trusted_targets)["data"]
    ConfigStore.instance().store(group="data", name="checkpoint", node=data, provider="segkit.eval")


def trusted_targets_override(overrides: Sequence[str]) -> Sequence[str] | str:
    """The `trusted_targets=` of the command line (a list or one name): the checkpoint is checked before Hydra
    composes the config."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return next((override.value() for override in parsed if override.key_or_group == "trusted_targets"), [])


def _check_classes(module: SegmentationModule, datamodule: SegmentationDataModule, ckpt_path: str) -> None:
    model_classes = module.class_names
    data_classes = list(datamodule.class_names)
    if len(model_classes) != len(data_classes):
        raise ValueError(
            f"{ckpt_path}: the model predicts {len(model_classes)} classes {model_classes}, but "
            f"{type(datamodule).__name__} has {len(data_classes)}: {data_classes}. Evaluate on data with the "
            f"checkpoint's classes"
        )
    if model_classes != data_classes:
        log.warning("the model's classes %s are the data's %s under other names; IoUs carry the model's names",
                    model_classes, data_classes)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """The metrics of the checkpoint `cfg.ckpt_path`, or of the ONNX export `cfg.onnx_path` (run by
    onnxruntime on the CPU), on the split `cfg.data.split` of `cfg.data`, written to
    `<paths.output_dir>/metrics.json`. `cfg` is conf/eval.yaml, composed after
    `register_checkpoint_data(ckpt_path)` for a checkpoint."""
    tta = build_tta(cfg.tta, cfg.tta_scales)  # checked before anything is loaded
    datamodule = instantiate(cfg.data)
    if cfg.onnx_path is not None:
        if cfg.trainer.accelerator not in ("auto", "cpu"):
            raise ValueError(f"trainer.accelerator={cfg.trainer.accelerator}: onnx_path=... runs on onnxruntime's CPU "
                             f"provider")
        source = {"onnx": str(cfg.onnx_path)}
        module = onnx_module(cfg.onnx_path, datamodule.ignore_index)
        trainer = instantiate(cfg.trainer, accelerator="cpu", precision="32-true")
    else:
        source = {"checkpoint": str(cfg.ckpt_path)}
        module = load_module(cfg.ckpt_path, cfg.trusted_targets)
        trained = module.segkit_config
        trained_tta = build_tta(trained.get("tta"), trained.get("tta_scales"))
        if trained_tta is not None and trained_tta != tta:
            log.warning("the training run reported its best checkpoint with test-time augmentation (val/* of its "
                        "metrics.json) and without it (without_tta); add %s to compare with the first",
                        trained_tta.overrides())
        precision = cfg.trainer.precision or module.segkit_config.get("trainer", {}).get("precision")
        trainer = instantiate(cfg.trainer, precision=precision)
    _check_classes(module, datamodule, next(iter(source.values())))
    module.test_time_augmentation = tta  # an export's spatial size is dynamic: its views are a checkpoint's
    # The normalisation of training: the data config's own, or else the network's.
    datamodule.use_normalisation_of(module.net)
    # Lightning's test loop reads the datamodule's `split`; its results are renamed after that split.
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    split = datamodule.split
    output_dir = Path(cfg.paths.output_dir)
    metrics = {
        **split_metrics(results, module.class_names, "test", split),
        "split": split,
        "samples": len(datamodule.test_set),
        "data": type(datamodule).__name__,
        **source,
        **tta_settings(tta),
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        figures = write_evaluation_figures(module, datamodule, metrics[f"{split}/iou_per_class"],
                                           metrics[f"{split}/miou"], cfg.show, output_dir)
        report(f"segkit eval: {next(iter(source.values()))} on {metrics['data']}, split {split} "
               f"({metrics['samples']} samples)\n"
               f"  {format_metrics(metrics, split)}\n"
               f"  metrics: {metrics_path}\n"
               f"  figures: {', '.join(path.name for path in figures)}")
    return metrics
