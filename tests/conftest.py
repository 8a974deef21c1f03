from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from torchvision.models import MobileNet_V2_Weights, VGG16_BN_Weights, mobilenet_v2, vgg16_bn

from segkit.config import CONFIG_DIR

from .official_layouts import VOC_SPLITS, write_voc

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


def compose_train(*overrides: str, output_dir: Path, tiny: bool = True) -> DictConfig:
    """Composes conf/train.yaml as `python -m segkit.train <overrides>` would, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*(TINY if tiny else []), *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """`compose_train` writing into tmp_path."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_train(*overrides, output_dir=tmp_path / "run", tiny=tiny)

    return _make


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC 2012 layout of `VOC_SPLITS` in tmp_path."""
    write_voc(tmp_path, VOC_SPLITS)
    return tmp_path


WEIGHTS = {"vgg": VGG16_BN_Weights.IMAGENET1K_V1, "mobilenetv2": MobileNet_V2_Weights.IMAGENET1K_V2}
ARCHITECTURES = {"vgg": vgg16_bn, "mobilenetv2": mobilenet_v2}


def cache_file(torch_home: Path, weights) -> Path:
    return torch_home / "hub" / "checkpoints" / Path(weights.url).name


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """A torchvision cache holding randomly initialised weights with the official keys and shapes, so
    the real loading code runs with no download."""
    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    for name, weights in WEIGHTS.items():
        state = ARCHITECTURES[name]().state_dict()
        for key, value in state.items():  # non-trivial BatchNorm statistics, so a skipped load would show
            if key.endswith(("running_mean", "running_var")):
                value.uniform_(0.5, 1.5)
        path = cache_file(home, weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    return home


@pytest.fixture(autouse=True)
def offline(monkeypatch, torch_home) -> Path:
    """Every test: weights come from the test cache, and any download attempt fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))

    def no_network(url, *args, **kwargs):
        raise URLError(f"tests never download ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return torch_home
