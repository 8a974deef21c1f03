"""VGG-style encoders: stages of 3x3 conv-BN-ReLU blocks, each ending in a 2x2 max-pool whose indices
the SegNet decoder reuses.

`layout="vgg16"` is the encoder of the SegNet paper, torchvision's `vgg16_bn().features` (with
`weights="imagenet"`, `VGG16_BN_Weights.IMAGENET1K_V1`). `layout="article"` is the 4-stage encoder of
the "Efficient Image Segmentation Using PyTorch" article (`segnet`, `dsc_segnet`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models import VGG16_BN_Weights

from segkit.models.blocks import ActivationLayer, NormLayer, check_conv_type, make_conv, scale_channels
from segkit.models.encoders.base import Encoder, Pool, load_features, max_pool_2x2, resolve_weights
from segkit.models.encoders.registry import register_encoder

# (channels, blocks) per stage.
VGG_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "article": ((64, 128, 256, 512), (2, 2, 3, 3)),
    "vgg16": ((64, 128, 256, 512, 512), (2, 2, 3, 3, 3)),
}
PRETRAINED = {("vgg16", "imagenet"): VGG16_BN_Weights.IMAGENET1K_V1}


@register_encoder("vgg")
class VGGEncoder(Encoder):
    """Laid out exactly as torchvision's VGG `features` (one flat Sequential; convs keep their bias, as
    torchvision's do), so an ImageNet state dict loads key for key."""

    def __init__(
        self,
        layout: str = "vgg16",
        weights: str | None = None,
        conv: str = "standard",
        width: float = 1.0,
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
        activation_layer: ActivationLayer = partial(nn.ReLU, inplace=True),
    ) -> None:
        super().__init__()
        if layout not in VGG_LAYOUTS:
            raise ValueError(f"unknown VGG layout {layout!r}; valid layouts: {', '.join(VGG_LAYOUTS)}")
        weights = resolve_weights(f"vgg/{layout}", weights, check_conv_type(conv), width)
        if weights is not None and (layout, weights) not in PRETRAINED:
            valid = [f"layout={lay} weights={w}" for lay, w in PRETRAINED]
            raise ValueError(f"no pretrained weights {weights!r} for VGG layout {layout!r}; available: {valid}")
        channels, depths = VGG_LAYOUTS[layout]
        channels = tuple(scale_channels(c, width) for c in channels)
        layers: list[nn.Module] = []
        for stage_channels, depth in zip(channels, depths):
            for _ in range(depth):
                layers += [make_conv(conv, in_channels, stage_channels), norm_layer(stage_channels), activation_layer()]
                in_channels = stage_channels
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.stage_channels = channels
        self.decoder_depths = tuple(depths)
        self.out_channels = channels[-1]
        self.conv = conv
        self.weights = weights
        if weights is not None:
            load_features(self.features, PRETRAINED[layout, weights])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[Pool]]:
        features, pools = [], []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                x, pool = max_pool_2x2(x)
                pools.append(pool)
                features.append(x)
            else:
                x = layer(x)
        return features, pools
