"""python -m segkit.eval ckpt_path=...: the metrics of a trained checkpoint on a split of its data, or of
another dataset with the same classes, written to metrics.json.

    python -m segkit.eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt       # its val split
    python -m segkit.eval ckpt_path=... data=pets data.root=../shared/data data.split=test

The model and its training config come from the checkpoint: only the data (`data=...`, `data.*`), the
paths and the trainer's accelerator, devices and precision can be set on the command line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.checkpoint import load_module, read_training_config
from segkit.config import CONFIG_DIR
from segkit.data import SegmentationDataModule
from segkit.module import SegmentationModule
from segkit.train import format_metrics, split_metrics

log = logging.getLogger(__name__)

OVERRIDABLE_KEYS = {"data", "ckpt_path", "trusted_targets", "paths", "trainer.accelerator", "trainer.devices",
                    "trainer.precision"}
OVERRIDABLE_PREFIXES = ("data.", "paths.", "hydra.", "hydra/")


def check_overrides(overrides: Sequence[str]) -> str:
    """Refuses command-line overrides of anything but the data, paths and devices, since the model and
    its training settings come from the checkpoint; returns the checkpoint path the overrides name."""
    ckpt_path = None
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "ckpt_path":
            if override.is_sweep_override():
                raise ValueError(f"{override.input_line}: segkit.eval evaluates one checkpoint per command")
            ckpt_path = str(override.value())
        elif key not in OVERRIDABLE_KEYS and not key.startswith(OVERRIDABLE_PREFIXES):
            raise ValueError(
                f"cannot override {key!r} ({override.input_line}): the model and its training settings come from "
                f"the checkpoint. segkit.eval takes data=..., data.*, ckpt_path, paths.*, trainer.accelerator, "
                f"trainer.devices, trainer.precision and hydra.*"
            )
    if ckpt_path is None:
        raise ValueError("ckpt_path=... is required: the checkpoint to evaluate")
    return ckpt_path


def register_checkpoint_data(ckpt_path: str | Path, trusted_targets: Sequence[str] = ()) -> None:
    """Makes the checkpoint's resolved data config the option `checkpoint` of the data group, which
    conf/eval.yaml selects by default; Hydra then applies `data.*` overrides to it. A checkpoint naming
    targets outside segkit's and `trusted_targets` is refused first (`segkit.trust`)."""
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
    """The metrics of the checkpoint `cfg.ckpt_path` on the split `cfg.data.split` of `cfg.data`,
    written to `<paths.output_dir>/metrics.json`. `cfg` is conf/eval.yaml, composed after
    `register_checkpoint_data(ckpt_path)`."""
    module = load_module(cfg.ckpt_path, cfg.trusted_targets)
    datamodule = instantiate(cfg.data)
    _check_classes(module, datamodule, cfg.ckpt_path)
    # The normalisation of training: the data config's own, or else the network's.
    datamodule.use_normalisation_of(module.net)
    precision = cfg.trainer.precision or module.segkit_config.get("trainer", {}).get("precision")
    trainer = instantiate(cfg.trainer, precision=precision)
    # Lightning's test loop reads the datamodule's `split`; its results are renamed after that split.
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    split = datamodule.split
    output_dir = Path(cfg.paths.output_dir)
    metrics = {
        **split_metrics(results, module.class_names, "test", split),
        "split": split,
        "samples": len(datamodule.test_set),
        "data": type(datamodule).__name__,
        "checkpoint": str(cfg.ckpt_path),
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"segkit eval: {cfg.ckpt_path} on {metrics['data']}, split {split} ({metrics['samples']} samples)\n"
              f"  {format_metrics(metrics, split)}\n"
              f"  metrics: {metrics_path}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Checks the overrides and registers the checkpoint's data config, then lets Hydra compose
    conf/eval.yaml, whose data group starts from that config."""
    # Overrides are the arguments with a value or a deletion; the rest are Hydra's flags and their values.
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-") and ("=" in arg or arg.startswith("~"))]
    try:
        register_checkpoint_data(check_overrides(overrides), trusted_targets_override(overrides))
    except (ValueError, OSError, OverrideParseException) as error:
        sys.exit(f"segkit.eval: {error}")
    _hydra_main()


if __name__ == "__main__":
    main()
