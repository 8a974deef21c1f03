"""segkit's segmentation networks: SegNet over any registered encoder (`segkit.models.encoders`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from segkit.models.encoders import ENCODERS, Encoder, get_encoder
from segkit.models.segnet import SegNet


def build_model(num_classes: int, encoder: Mapping[str, Any], name: str = "segnet", compile: bool = False,
                **segnet_args: Any) -> SegNet:
    """A SegNet with the registered encoder `encoder["name"]`, built with the rest of `encoder` as its
    arguments; `segnet_args` go to `SegNet` (`upsample`, `input_norm`, ...). `name` labels the model.

    `compile=True` compiles the network's forward with `torch.compile` in place (`nn.Module.compile`):
    parameter names and checkpoints stay those of the plain network; the first call compiles."""
    encoder_args = dict(encoder)
    if "name" not in encoder_args:
        raise ValueError(f"model.encoder needs a name; valid names: {', '.join(sorted(ENCODERS))}")
    net = SegNet(get_encoder(encoder_args.pop("name"), **encoder_args), num_classes, name=name, **segnet_args)
    if compile:
        net.compile()
    return net


def without_pretrained_weights(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """`model_config` with its encoder's `weights` set to None: for building a network whose weights
    come from elsewhere (a checkpoint) or do not matter (counting)."""
    model_config = dict(model_config)
    if isinstance(model_config.get("encoder"), Mapping):
        model_config["encoder"] = {**model_config["encoder"], "weights": None}
    return model_config


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ENCODERS", "Encoder", "SegNet", "build_model", "count_parameters", "get_encoder", "without_pretrained_weights"]
