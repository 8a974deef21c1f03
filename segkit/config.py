"""Where segkit's Hydra configs live and how entry points turn them into plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# conf/ sits beside the package in the project root; segkit is installed editable (`make install`).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def to_plain(cfg: DictConfig | None) -> Any:
    """A resolved, plain-Python copy of a config node (None for an absent or empty one), fit for
    checkpoints and loggers."""
    if cfg is None or (isinstance(cfg, DictConfig) and not cfg):
        return None
    return OmegaConf.to_container(cfg, resolve=True)
