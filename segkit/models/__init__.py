"""The model registry: every segmentation network segkit can build, by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from segkit.models.segnet import SegNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "segnet": partial(SegNet, conv="standard"),
    "dsc_segnet": partial(SegNet, conv="dsc"),
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model `name`; keyword arguments override its defaults."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "SegNet", "build_model", "count_parameters"]
