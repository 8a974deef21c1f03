"""The registry of SegNet encoders. A new encoder is one file here (a class registered with
`@register_encoder("name")` that follows the contract in `base.py`) plus one config in conf/model/."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from segkit.models.encoders.base import Encoder, Pool, WeightsUnavailableError

ENCODERS: dict[str, type[Encoder]] = {}

EncoderType = TypeVar("EncoderType", bound=type[Encoder])


def register_encoder(name: str) -> Callable[[EncoderType], EncoderType]:
    def register(cls: EncoderType) -> EncoderType:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is registered twice: {ENCODERS[name].__name__} and {cls.__name__}")
        ENCODERS[name] = cls
        return cls

    return register


def get_encoder(name: str, **kwargs) -> Encoder:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name](**kwargs)


# Importing the encoder files registers them.
from segkit.models.encoders import mobilenetv2, vgg  # noqa: E402,F401

__all__ = ["ENCODERS", "Encoder", "Pool", "WeightsUnavailableError", "get_encoder", "register_encoder"]
