"""The contract every SegNet encoder states once, and the loading of torchvision's pretrained weights.

An encoder is an `nn.Module` whose `forward(x)` returns `(features, pools)`:

- `pools[k]` (k = 0 .. n-1, shallow to deep) describes the k-th 2x downsampling: `Pool.size` is the
  spatial size before it, `Pool.indices` the positions of the maxima of its 2x2 windows (`max_pool_2x2`),
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
import torch.nn.functional as F
from torch import nn
from torchvision.models import WeightsEnum

from segkit.utilities.imagenet import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


class Pool(NamedTuple):
    """Where a 2x2 max-pooling found its maxima. `indices`: the flat (h * w) positions in the `size` map before
    pooling (`F.max_pool2d`'s), or with `in_window`, each maximum's place in its window (0 top left, 1 top
    right, 2 bottom left, 3 bottom right: the form an ONNX export computes, see `max_pool_2x2`)."""

    indices: torch.Tensor
    size: torch.Size
    in_window: bool = False


def max_pool_2x2(x: torch.Tensor, ceil_mode: bool = False) -> tuple[torch.Tensor, Pool]:
    """2x2 max-pooling with stride 2, and where each maximum was (the first of equal ones, as `F.max_pool2d`).

    In PyTorch: `F.max_pool2d` with its flat indices. While exporting to ONNX: a plain MaxPool for the values
    and each maximum's place in its window from comparisons with the window's four pixels. onnxruntime runs
    MaxPool's indices output with a generic kernel that took more time than all the convolutions of
    `dsc_segnet` together, and torch's exporter adds a 1x1 MaxPool over the whole map to make the indices
    per channel; an int8 file keeps the plain MaxPool in uint8 (docs/export.md)."""
    size = x.shape[-2:]
    if not torch.onnx.is_in_onnx_export():
        pooled, indices = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=ceil_mode, return_indices=True)
        return pooled, Pool(indices, size)
    pooled = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=ceil_mode)
    height, width = size
    if ceil_mode:  # the last, partial window of an odd side: its missing pixels never win
        x = F.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
    else:  # the pixels past the last whole window are not pooled
        x = x[..., : height - height % 2, : width - width % 2]
    top_left, top_right, bottom_left = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2]
    place = torch.where(top_left == pooled, 0,
                        torch.where(top_right == pooled, 1, torch.where(bottom_left == pooled, 2, 3)))
    return pooled, Pool(place.to(torch.uint8), size, in_window=True)


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
