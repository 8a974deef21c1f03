import pytest
from hydra.utils import instantiate
from torch import nn


@pytest.fixture
def model(make_config):
    """Builds conf/model/<name>.yaml (3 classes) with overrides; pretrained weights off (see test_pretrained)."""

    def _build(name: str, *overrides: str) -> nn.Module:
        return instantiate(make_config(f"model={name}", "model.encoder.weights=null", *overrides).model)

    return _build
