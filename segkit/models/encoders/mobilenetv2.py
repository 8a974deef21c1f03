"""MobileNetV2 (inverted residuals) as a SegNet encoder: torchvision's `mobilenet_v2().features`,
with `weights="imagenet"` `MobileNet_V2_Weights.IMAGENET1K_V2`, loaded unchanged.

MobileNetV2 downsamples with stride-2 convolutions, so there are no max-pool switches for SegNet's
decoder to reuse. Before each stride-2 layer we take them from a 2x2 max over the channel-wise
maximum of that layer's input: the position of the strongest response in each window, i.e. where the
encoder saw the edge. The decoder unpools every channel to that position, which keeps SegNet's
boundary-preserving, parameter-free upsampling at the cost of one cheap max per stage. (The windows
use ceil mode so that their count matches the ceil(size / 2) of a padded stride-2 conv at odd sizes.)
`upsample=bilinear` on the model replaces this with plain interpolation for comparison.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from segkit.models.blocks import NormLayer, check_conv_type, make_conv
from segkit.models.encoders.base import Encoder, Pool, load_features, max_pool_2x2, resolve_weights
from segkit.models.encoders.registry import register_encoder

PRETRAINED = {"imagenet": MobileNet_V2_Weights.IMAGENET1K_V2}


def _stride(layer: nn.Module) -> int:
    # features[0] and [18] are Conv2dNormActivation (a Sequential starting with the conv); the rest
    # are InvertedResidual, which records its stride.
    return layer.stride if hasattr(layer, "stride") else layer[0].stride[0]


@register_encoder("mobilenetv2")
class MobileNetV2Encoder(Encoder):
    def __init__(
        self,
        weights: str | None = None,
        conv: str = "standard",
        width: float = 1.0,
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
        decoder_depth: int = 2,
    ) -> None:
        super().__init__()
        weights = resolve_weights("mobilenetv2", weights, check_conv_type(conv), width)
        if weights is not None and weights not in PRETRAINED:
            raise ValueError(f"no pretrained weights {weights!r} for mobilenetv2; available: {list(PRETRAINED)}")
        if weights is not None and in_channels != 3:
            raise ValueError(f"ImageNet weights take 3 input channels, got in_channels={in_channels}")
        self.features = mobilenet_v2(width_mult=width, norm_layer=norm_layer).features
        self.downsampling = [i for i, layer in enumerate(self.features) if _stride(layer) == 2]
        stem = self.features[0][0]
        if conv == "dsc" or in_channels != 3:
            # The only dense 3x3 conv of MobileNetV2 (its other 3x3 convs are already depthwise).
            self.features[0][0] = make_conv(conv, in_channels, stem.out_channels, stride=2, bias=False)
        stage_outputs = [self.features[i - 1].out_channels for i in self.downsampling[1:]]
        # No encoder features exist at full resolution: the decoder keeps the first stage's width there.
        self.stage_channels = (stage_outputs[0], *stage_outputs)
        self.decoder_depths = (decoder_depth,) * len(self.downsampling)
        self.out_channels = self.features[-1].out_channels
        self.conv = conv
        self.weights = weights
        if weights is not None:
            load_features(self.features, PRETRAINED[weights])

    @staticmethod
    def _switches(x: torch.Tensor) -> Pool:
        return max_pool_2x2(x.amax(dim=1, keepdim=True), ceil_mode=True)[1]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[Pool]]:
        features, pools = [], []
        for index, layer in enumerate(self.features):
            if index in self.downsampling:
                if index > 0:
                    features.append(x)
                pools.append(self._switches(x))
            x = layer(x)
        features.append(x)
        return features, pools
