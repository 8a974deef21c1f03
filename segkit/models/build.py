"""Building a network: from a config (`build_model(num_classes, encoder={...})`, the `_target_` of conf/model/) or
by the name of a model config (`build_model(3, "dsc_segnet")`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from segkit.config import CONFIG_DIR
from segkit.models.encoders.registry import ENCODERS, get_encoder
from segkit.models.segnet import SegNet

MODEL_CONFIG_DIR = CONFIG_DIR / "model"


def model_names() -> list[str]:
    """The names of the model configs (conf/model/*.yaml): what `model=` and `build_model(n, "<name>")` take."""
    return sorted(path.stem for path in MODEL_CONFIG_DIR.glob("*.yaml"))


def model_config(name: str) -> dict[str, Any]:
    """The config conf/model/<name>.yaml, without its `_target_` and `num_classes` (the data's to give)."""
    if name not in model_names():
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
    config = OmegaConf.to_container(OmegaConf.load(MODEL_CONFIG_DIR / f"{name}.yaml"))
    return {key: value for key, value in config.items() if key not in ("_target_", "num_classes")}


def build_model(num_classes: int, encoder: Mapping[str, Any] | str, name: str = "segnet", compile: bool = False,
                **segnet_args: Any) -> SegNet:
    """A SegNet with the registered encoder `encoder["name"]`, built with the rest of `encoder` as its
    arguments; `segnet_args` go to `SegNet` (`upsample`, `input_norm`, ...). `name` labels the model.

    `encoder` may instead be the name of a model config, `build_model(3, "dsc_segnet")`: that config's network
    (`model_names()` lists them), with `compile` and `segnet_args` overriding its keys.

    `compile=True` compiles the network's forward with `torch.compile` in place (`nn.Module.compile`):
    parameter names and checkpoints stay those of the plain network; the first call compiles."""
    if isinstance(encoder, str):
        config = {**model_config(encoder), **segnet_args}
        config["compile"] = compile or config.get("compile", False)
        return build_model(num_classes, **config)
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
