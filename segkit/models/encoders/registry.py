"""The registry of SegNet encoders: `@register_encoder("name")` on an encoder class (the contract is in
`base.py`) makes `get_encoder("name", ...)` build it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from segkit.models.encoders.base import Encoder

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
