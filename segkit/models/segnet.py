"""SegNet (Badrinarayanan et al., 2017): an encoder whose max-pools keep their indices and a mirrored
decoder that max-unpools with them, so boundaries come back at the positions the encoder saw them.

The layout follows the "Efficient Image Segmentation Using PyTorch" article: BatchNorm on the input,
four stages of conv-BN-ReLU blocks (64, 128, 256, 512 channels; 2, 2, 3, 3 blocks) each followed by a
2x2 max-pool. `conv="dsc"` makes every 3x3 convolution depthwise-separable.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.blocks import ActivationLayer, ConvNormAct, NormLayer, make_conv


class SegNetEncoder(nn.Module):
    """Stages of conv blocks, each ending in a 2x2 max-pool that returns its indices."""

    def __init__(
        self,
        in_channels: int,
        stage_channels: Sequence[int],
        stage_depths: Sequence[int],
        conv: str,
        norm_layer: NormLayer,
        activation_layer: ActivationLayer,
    ) -> None:
        super().__init__()
        block = partial(ConvNormAct, conv=conv, norm_layer=norm_layer, activation_layer=activation_layer)
        self.stages = nn.ModuleList()
        for channels, depth in zip(stage_channels, stage_depths):
            self.stages.append(nn.Sequential(*(block(in_channels if i == 0 else channels, channels) for i in range(depth))))
            in_channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Size]]]:
        """Returns the deepest features and, per stage, the pooling indices and the size before pooling."""
        pooled = []
        for stage in self.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, indices = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
            pooled.append((indices, size))
        return x, pooled


class SegNetDecoder(nn.Module):
    """Mirror of the encoder: per stage, max-unpool with the encoder's indices, then conv blocks whose
    last one narrows to the channels of the stage above. The top stage ends in the classifier conv."""

    def __init__(
        self,
        num_classes: int,
        stage_channels: Sequence[int],
        stage_depths: Sequence[int],
        conv: str,
        norm_layer: NormLayer,
        activation_layer: ActivationLayer,
    ) -> None:
        super().__init__()
        block = partial(ConvNormAct, conv=conv, norm_layer=norm_layer, activation_layer=activation_layer)
        self.stages = nn.ModuleList()
        for index in reversed(range(len(stage_channels))):
            channels, depth = stage_channels[index], stage_depths[index]
            layers = [block(channels, channels) for _ in range(depth - 1)]
            if index > 0:
                layers.append(block(channels, stage_channels[index - 1]))
            else:
                # Plain conv to logits: no norm or ReLU, unlike the article, whose ReLU clips negative logits.
                layers.append(make_conv(conv, channels, num_classes, bias=True))
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor, pooled: list[tuple[torch.Tensor, torch.Size]]) -> torch.Tensor:
        for stage, (indices, size) in zip(self.stages, reversed(pooled)):
            # output_size restores odd sizes that the pool floored (97 -> 48 -> 97).
            x = F.max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=size)
            x = stage(x)
        return x


class SegNet(nn.Module):
    """SegNet producing N x num_classes x H x W logits for N x in_channels x H x W input."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        stage_channels: Sequence[int] = (64, 128, 256, 512),
        stage_depths: Sequence[int] = (2, 2, 3, 3),
        conv: str = "standard",
        input_norm: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
        activation_layer: ActivationLayer = partial(nn.ReLU, inplace=True),
    ) -> None:
        super().__init__()
        if len(stage_channels) != len(stage_depths):
            raise ValueError(
                f"stage_channels {list(stage_channels)} and stage_depths {list(stage_depths)} must have the same length"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        # Every stage halves the size, so inputs need at least this many pixels per side.
        self.min_size = 2 ** len(stage_channels)
        layout = dict(conv=conv, norm_layer=norm_layer, activation_layer=activation_layer)
        self.input_norm = norm_layer(in_channels) if input_norm else nn.Identity()
        self.encoder = SegNetEncoder(in_channels, stage_channels, stage_depths, **layout)
        self.decoder = SegNetDecoder(num_classes, stage_channels, stage_depths, **layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SegNet expects N x {self.in_channels} x H x W input, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"input of size {tuple(x.shape[-2:])} is too small: {len(self.encoder.stages)} pooling stages "
                f"need at least {self.min_size} x {self.min_size}"
            )
        features, pooled = self.encoder(self.input_norm(x))
        return self.decoder(features, pooled)
