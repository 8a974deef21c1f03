"""SegNet (Badrinarayanan et al., 2017): an encoder whose downsampling keeps the positions of its
maxima and a mirrored decoder that puts activations back at those positions ("max-unpooling"), so
boundaries return where the encoder saw them. The decoder is built from the encoder's contract
(`segkit.models.encoders.base`), so any registered encoder gets a SegNet.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.blocks import ActivationLayer, ConvNormAct, NormLayer, make_conv
from segkit.models.encoders.base import Encoder, Pool

UPSAMPLING = ("unpool", "bilinear")


def max_unpool2d(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    """`F.max_unpool2d` written as a scatter: torch's ONNX exporter has no MaxUnpool for it
    (pytorch/pytorch#25088, #85388). Single-channel indices are shared by every channel. The output keeps
    the input's memory format: a channels_last network would otherwise get NCHW activations from every
    unpooling, and convolutions that mix the two formats copy or take slow paths (the full-resolution one
    most of all). Positions within windows (an ONNX export's, `max_pool_2x2`) go to `_unpool_in_window`."""
    if pool.in_window:
        return _unpool_in_window(x, pool)
    n, c = x.shape[:2]
    height, width = pool.size
    indices = pool.indices.expand(n, c, -1, -1)
    if c > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # Scattered along the pixels of an N x HW x C view, which is the channels_last layout's own order.
        pixels = x.new_zeros(n, height * width, c).scatter(1, indices.permute(0, 2, 3, 1).flatten(1, 2),
                                                           x.permute(0, 2, 3, 1).flatten(1, 2))
        return pixels.view(n, height, width, c).permute(0, 3, 1, 2)
    out = x.new_zeros(n, c, height * width).scatter(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, height, width)


def _unpool_in_window(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    """The unpooling of an ONNX export: each value kept at its window place, the other three set to 0, the four
    maps interleaved by a pixel shuffle (DepthToSpace), then cut or padded to the size before pooling (odd
    sides). Element-wise operations that onnxruntime runs fast, and in uint8 in an int8 file, where its
    ScatterElements is a generic kernel."""
    by_place = torch.stack([torch.where(pool.indices == place, x, 0.0) for place in range(4)], dim=2)
    out = F.pixel_shuffle(by_place.flatten(1, 2), 2)
    height, width = pool.size
    out = out[..., :height, :width]
    return F.pad(out, (0, width - out.shape[-1], 0, height - out.shape[-2]))


class SegNetDecoder(nn.Module):
    """Per encoder resolution, deepest first: upsample to the size before that downsampling, then conv
    blocks whose last one narrows to the width of the resolution above. The top ends in the classifier."""

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        upsample: str = "unpool",
        norm_layer: NormLayer = nn.BatchNorm2d,
        activation_layer: ActivationLayer = partial(nn.ReLU, inplace=True),
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample={upsample!r} is not an upsampling mode; expected one of {list(UPSAMPLING)}")
        self.upsample = upsample
        block = partial(ConvNormAct, conv=encoder.conv, norm_layer=norm_layer, activation_layer=activation_layer)
        widths, depths = encoder.stage_channels, encoder.decoder_depths
        in_channels = encoder.out_channels
        self.stages = nn.ModuleList()
        for level in reversed(range(len(widths))):
            layers = []
            for _ in range(depths[level] - 1):
                layers.append(block(in_channels, widths[level]))
                in_channels = widths[level]
            if level > 0:
                layers.append(block(in_channels, widths[level - 1]))
                in_channels = widths[level - 1]
            else:
                # Plain conv to logits: no norm or ReLU, unlike the article, whose ReLU clips negative logits.
                layers.append(make_conv(encoder.conv, in_channels, num_classes, bias=True))
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor, pools: list[Pool]) -> torch.Tensor:
        for stage, pool in zip(self.stages, reversed(pools)):
            if self.upsample == "unpool":
                x = max_unpool2d(x, pool)
            else:
                x = F.interpolate(x, size=pool.size, mode="bilinear", align_corners=False)
            x = stage(x)
        return x


class SegNet(nn.Module):
    """N x in_channels x H x W images -> N x num_classes x H x W logits."""

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        upsample: str = "unpool",
        input_norm: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        activation_layer: ActivationLayer = partial(nn.ReLU, inplace=True),
        name: str = "segnet",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.name = name
        self.num_classes = num_classes
        self.in_channels = _in_channels(encoder)
        # Every downsampling halves the size, so inputs need at least this many pixels per side.
        self.min_size = 2 ** len(encoder.stage_channels)
        self.input_mean, self.input_std = encoder.input_mean, encoder.input_std
        # The article normalises inside the network with a BatchNorm on the input.
        self.input_norm = norm_layer(self.in_channels) if input_norm else nn.Identity()
        self.encoder = encoder
        self.decoder = SegNetDecoder(encoder, num_classes, upsample, norm_layer, activation_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.name} expects N x {self.in_channels} x H x W input, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"input of size {tuple(x.shape[-2:])} is too small for {self.name}: "
                f"{len(self.encoder.stage_channels)} downsamplings need at least {self.min_size} x {self.min_size}"
            )
        features, pools = self.encoder(self.input_norm(x))
        return self.decoder(features[-1], pools)


def _in_channels(encoder: Encoder) -> int:
    first_conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    return first_conv.in_channels
