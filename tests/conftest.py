from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from segkit.config import CONFIG_DIR

# A run small enough for the fast suite: tiny images, a few batches, no progress bar or summary.
TINY = [
    "data.image_size=[32,32]",
    "data.num_train=32",
    "data.num_val=16",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Composes conf/train.yaml as `python -m segkit.train <overrides>` would, writing into tmp_path."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*(TINY if tiny else []), *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return _make
