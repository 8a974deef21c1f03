"""Where segkit's Hydra configs live and how entry points turn them into plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

# conf/ sits beside the package in the project root; segkit is installed editable (`make install`).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def to_plain(cfg: DictConfig | None) -> Any:
    """A resolved, plain-Python copy of a config node (None for an absent or empty one), fit for
    checkpoints and loggers."""
    if cfg is None or (isinstance(cfg, DictConfig) and not cfg):
        return None
    return OmegaConf.to_container(cfg, resolve=True)


def _data_num_classes(*, _parent_: DictConfig) -> int:
    """`num_classes: ${data_num_classes:}` in a data config: the number of classes its datamodule finds
    from that config (data=folder: from the folder), so the model's `num_classes` follows."""
    return len(get_class(_parent_._target_).config_class_names(_parent_))


# Registered here, in the module every command (and test) imports CONFIG_DIR from, so that any config
# composed with it resolves, whichever datamodule was imported.
OmegaConf.register_new_resolver("data_num_classes", _data_num_classes, replace=True)
