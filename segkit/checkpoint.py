"""Reading a trained segkit checkpoint back: its network and the resolved training config it carries.

`segkit.train` stores the run's config in every checkpoint (`checkpoint["segkit_config"]`, plain
containers only), so segkit.eval and segkit.predict need nothing but the file: the model, its data,
classes, palette and input normalisation all come from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segkit.checkpoints import CheckpointError, read_trusted_checkpoint
from segkit.module import SegmentationModule

CONFIG_KEY = "segkit_config"


def _require_config(config: dict[str, Any] | None, path: str | Path) -> dict[str, Any]:
    if config is None:
        raise CheckpointError(
            f"{path}: the checkpoint carries no training config ({CONFIG_KEY!r}); it was written by a segkit "
            f"older than segkit.eval and segkit.predict, or not by segkit.train. Retrain, or use "
            f"SegmentationModule.load_from_checkpoint with a datamodule built from the training config"
        )
    return config


def read_training_config(ckpt_path: str | Path, trusted_targets: Iterable[str] = ()) -> dict[str, Any]:
    """The resolved training config stored in a checkpoint, read without loading its weights into memory and
    refused (`CheckpointError`) if it names targets outside segkit's and `trusted_targets` (`segkit.trust`)."""
    return _require_config(read_trusted_checkpoint(ckpt_path, trusted_targets, mmap=True).get(CONFIG_KEY), ckpt_path)


def load_module(ckpt_path: str | Path, trusted_targets: Iterable[str] = ()) -> SegmentationModule:
    """The trained module of a checkpoint, on the CPU, in eval mode, with `segkit_config` set; built only
    from targets of segkit's and `trusted_targets` (`SegmentationModule.load_from_checkpoint`)."""
    module = SegmentationModule.load_from_checkpoint(ckpt_path, map_location="cpu", trusted_targets=trusted_targets)
    _require_config(module.segkit_config, ckpt_path)
    return module.eval()
