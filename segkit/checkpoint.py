"""Reading a trained segkit checkpoint back: its network and the resolved training config it carries.

`segkit.train` stores the run's config in every checkpoint (`checkpoint["segkit_config"]`, plain
containers only), so segkit.eval and segkit.predict need nothing but the file: the model, its data,
classes, palette and input normalisation all come from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkit.checkpoints import read_checkpoint
from segkit.module import SegmentationModule

CONFIG_KEY = "segkit_config"


def _require_checkpoint(ckpt_path: str | Path) -> Path:
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    return path


def _require_config(config: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    if config is None:
        raise ValueError(
            f"{path}: the checkpoint carries no training config ({CONFIG_KEY!r}); it was written by a segkit "
            f"older than segkit.eval and segkit.predict, or not by segkit.train. Retrain, or use "
            f"SegmentationModule.load_from_checkpoint with a datamodule built from the training config"
        )
    return config


def read_training_config(ckpt_path: str | Path) -> dict[str, Any]:
    """The resolved training config stored in a checkpoint, read without loading its weights into memory."""
    path = _require_checkpoint(ckpt_path)
    return _require_config(read_checkpoint(path, mmap=True).get(CONFIG_KEY), path)


def load_module(ckpt_path: str | Path) -> SegmentationModule:
    """The trained module of a checkpoint, on the CPU, in eval mode, with `segkit_config` set."""
    path = _require_checkpoint(ckpt_path)
    module = SegmentationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    _require_config(module.segkit_config, path)
    return module.eval()
