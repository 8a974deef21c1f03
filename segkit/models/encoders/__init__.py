"""SegNet encoders. A new encoder is one file here (a class registered with `@register_encoder("name")` from
`registry.py`, following the contract in `base.py`), imported below, plus one config in conf/model/."""

from segkit.models.encoders import mobilenetv2, vgg  # noqa: F401  (importing an encoder file registers it)
from segkit.models.encoders.base import Encoder, Pool, WeightsUnavailableError
from segkit.models.encoders.registry import ENCODERS, get_encoder, register_encoder

__all__ = ["ENCODERS", "Encoder", "Pool", "WeightsUnavailableError", "get_encoder", "register_encoder"]
