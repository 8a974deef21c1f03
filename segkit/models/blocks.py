"""Convolution blocks with injectable norm and activation.

`conv="dsc"` swaps a dense k x k convolution for a depthwise-separable one (k x k depthwise with
`groups=in_channels`, then 1 x 1 pointwise), the substitution of the "Efficient Image Segmentation
Using PyTorch" article: about k*k times fewer weights and MACs when channels are wide.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

NormLayer = Callable[[int], nn.Module]
ActivationLayer = Callable[..., nn.Module]

CONV_TYPES = ("standard", "dsc")


class DepthwiseSeparableConv2d(nn.Sequential):
    """k x k depthwise convolution followed by a 1 x 1 pointwise convolution."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, bias: bool = True
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )


def make_conv(conv: str, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> nn.Module:
    """A 'same'-padded convolution of the given type (`standard` or `dsc`)."""
    padding = kernel_size // 2
    if conv == "standard":
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    if conv == "dsc":
        return DepthwiseSeparableConv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    raise ValueError(f"conv={conv!r} is not a convolution type; expected one of {list(CONV_TYPES)}")


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation; the conv has no bias when a norm follows it (the norm has one)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv: str = "standard",
        kernel_size: int = 3,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        activation_layer: ActivationLayer | None = partial(nn.ReLU, inplace=True),
    ) -> None:
        layers = [make_conv(conv, in_channels, out_channels, kernel_size, bias=norm_layer is None)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer())
        super().__init__(*layers)
