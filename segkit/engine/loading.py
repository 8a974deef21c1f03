"""Loading a trained module, in one place: a checkpoint to evaluate, predict with or export (`load_module`), a
distillation teacher (`load_teacher`, `build_distillation`), and the datamodule of a module's training
(`training_datamodule`).

Each file is read once as plain data and trust-checked (`SegmentationModule.load_from_checkpoint`), so only
segkit's own targets and those the user lists in `trusted_targets` are built from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from segkit.checkpoints import CheckpointError, require_training_config
from segkit.data import SegmentationDataModule
from segkit.engine.distillation import Distillation, check_settings
from segkit.engine.module import SegmentationModule


def load_module(ckpt_path: str | Path, trusted_targets: Iterable[str] = ()) -> SegmentationModule:
    """The trained module of a checkpoint, on the CPU, in eval mode, with `segkit_config` set; built only
    from targets of segkit's and `trusted_targets` (`SegmentationModule.load_from_checkpoint`)."""
    module = SegmentationModule.load_from_checkpoint(ckpt_path, map_location="cpu", trusted_targets=trusted_targets)
    require_training_config(module.segkit_config, ckpt_path)
    return module.eval()


def load_teacher(path: str | Path, num_classes: int, trusted_targets: Iterable[str] = ()) -> SegmentationModule:
    """The `SegmentationModule` of the checkpoint at `path`, on the CPU; refused (a `CheckpointError` naming
    `distill.teacher` and the file) when it names untrusted code or was trained for another number of classes
    than `num_classes`."""
    try:
        teacher = SegmentationModule.load_from_checkpoint(path, map_location="cpu", trusted_targets=trusted_targets)
    except CheckpointError as error:
        raise CheckpointError(f"distill.teacher={error}") from error  # its message starts with the path
    teacher_classes = teacher.hparams.num_classes
    if teacher_classes != num_classes:
        raise CheckpointError(f"distill.teacher={path}: the teacher predicts {teacher_classes} classes and the "
                              f"student {num_classes} (data.num_classes); distil from a teacher trained on the "
                              "same data and classes")
    return teacher


def build_distillation(config: Mapping[str, Any] | None, num_classes: int, ignore_index: int,
                       trusted_targets: Iterable[str] = ()) -> Distillation | None:
    """The `distill:` config of conf/train.yaml made a `Distillation`; None when it names no teacher."""
    if not config or config.get("teacher") is None:
        return None
    check_settings(config["temperature"], config["weight"])  # before the teacher is loaded
    teacher = load_teacher(config["teacher"], num_classes, trusted_targets)
    return Distillation(teacher, config["temperature"], config["weight"], ignore_index)


def training_datamodule(module: SegmentationModule, **overrides: Any) -> SegmentationDataModule:
    """The datamodule of a trained module's training config, with `overrides` of its keys (root=..., split=...),
    built but not set up (no file is read), normalising as training did."""
    data = instantiate({**module.segkit_config["data"], **overrides})
    data.use_normalisation_of(module.net)
    return data
