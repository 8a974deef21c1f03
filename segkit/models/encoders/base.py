"""The contract every SegNet encoder states once, and the loading of torchvision's pretrained weights.

An encoder is an `nn.Module` whose `forward(x)` returns `(features, pools)`:

- `pools[k]` (k = 0 .. n-1, shallow to deep) describes the k-th 2x downsampling: `Pool.size` is the
  spatial size before it, `Pool.indices` the flat (h * w) positions of the maxima of its 2x2 windows,
  with one channel per feature channel or a single channel shared by all of them.
- `features[k]` is the output of stage k, after downsampling k, at 1 / 2^(k+1) of the input size;
  `features[-1]` (with `out_channels` channels) is what the decoder starts from.

and which declares, as attributes:

- `stage_channels[k]`: the decoder's width at the resolution before downsampling k (the encoder's
  channels there), so the decoder mirrors the encoder;
- `decoder_depths[k]`: conv blocks of the decoder at that resolution;
- `conv`: `standard` or `dsc`, which the decoder follows;
- `input_mean`, `input_std`: the normalisation its weights expect, which the data pipeline takes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum

from segkit.utilities.imagenet import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


class Pool(NamedTuple):
    indices: torch.Tensor
    size: torch.Size


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in torchvision's cache nor downloadable."""


class Encoder(nn.Module):
    stage_channels: tuple[int, ...]
    decoder_depths: tuple[int, ...]
    out_channels: int
    conv: str
    input_mean: tuple[float, ...] = IMAGENET_MEAN
    input_std: tuple[float, ...] = IMAGENET_STD

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[Pool]]:
        raise NotImplementedError


def pretrained_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """The state dict of `weights` through torchvision's weights API: from the cache
    (`$TORCH_HOME/hub/checkpoints/<official file name>`) or downloaded there, hash-checked."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except URLError as error:
        raise WeightsUnavailableError(
            f"pretrained weights {type(weights).__name__}.{weights.name} are not in the cache ({path}) and could "
            f"not be downloaded from {weights.url} ({error.reason}). Download that file into {path.parent}, "
            "or train from scratch with model.encoder.weights=null"
        ) from error
    except RuntimeError as error:
        if "invalid hash value" not in str(error):
            raise
        raise WeightsUnavailableError(
            f"pretrained weights {type(weights).__name__}.{weights.name}: the file downloaded from {weights.url} "
            f"is not the published one ({error}; the hash is in its name) and was not kept. Retry, download it by "
            f"hand into {path.parent}, or train from scratch with model.encoder.weights=null"
        ) from error


def resolve_weights(encoder_name: str, weights: str | None, conv: str, width: float) -> str | None:
    """ImageNet weights exist only for the standard layout. `conv` and `width` are the knobs that ask
    "how much smaller, how much worse", so turning them trains from scratch, said in the log, rather
    than failing."""
    if weights is not None and (conv != "standard" or width != 1.0):
        log.warning(
            "%s: no %s weights exist for conv=%s, width=%s; the encoder starts from random initialisation",
            encoder_name, weights, conv, width,
        )
        return None
    return weights


def load_features(features: nn.Module, weights: WeightsEnum) -> None:
    """Loads the `features.*` tensors of a torchvision classifier's `weights` into `features`; every
    tensor of `features` must be there with its shape (the classifier head's are not needed)."""
    source = f"{type(weights).__name__}.{weights.name}"
    state_dict = pretrained_state_dict(weights)
    wanted = {key.removeprefix("features."): value for key, value in state_dict.items() if key.startswith("features.")}
    result = features.load_state_dict(wanted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"{source} does not fit the encoder: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
