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
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )


def check_conv_type(conv: str) -> str:
    if conv not in CONV_TYPES:
        raise ValueError(f"conv={conv!r} is not a convolution type; expected one of {list(CONV_TYPES)}")
    return conv


def make_conv(
    conv: str, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, bias: bool = True
) -> nn.Module:
    """A 'same'-padded convolution of the given type (`standard` or `dsc`)."""
    padding = kernel_size // 2
    if check_conv_type(conv) == "standard":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
    return DepthwiseSeparableConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """`channels * width` rounded to a multiple of `divisor` and never below it (as torchvision's
    `_make_divisible`), so width multipliers keep SIMD-friendly channel counts."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if width == 1.0:
        return channels
    scaled = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    return scaled + divisor if scaled < 0.9 * channels * width else scaled


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
