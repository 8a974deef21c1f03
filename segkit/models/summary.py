"""A network's size and cost: parameters (total, encoder, decoder), MACs of one forward pass and its output shape
(`python -m segkit.summary` prints them; training and the bench record them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segkit.models.build import count_parameters


def summarize(net: nn.Module, image_size: Sequence[int]) -> dict[str, Any]:
    """Parameters and multiply-accumulates of one forward pass on a 1 x C x H x W input.

    MACs are half of the FLOPs that `torch.utils.flop_counter` counts for convolutions and matrix
    products; norms, activations and unpooling are not counted, as is usual for MACs.
    """
    in_channels = getattr(net, "in_channels", 3)
    was_training = net.training
    net.eval()  # a training-mode forward would move BatchNorm's running statistics
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = net(torch.zeros(1, in_channels, *image_size))
    finally:
        net.train(was_training)
    total = count_parameters(net)
    encoder = getattr(net, "encoder", None)
    encoder_params = count_parameters(encoder) if isinstance(encoder, nn.Module) else None
    return {
        "model": getattr(net, "name", type(net).__name__),
        "image_size": list(image_size),
        "params": total,
        "params_encoder": encoder_params,
        "params_decoder": total - encoder_params if encoder_params is not None else None,
        "macs": counter.get_total_flops() // 2,
        "output_shape": list(output.shape),
    }


def format_summary(summary: dict[str, Any]) -> str:
    height, width = summary["image_size"]
    lines = [
        f"{summary['model']}: {summary['params']:,} parameters",
        f"  encoder {summary['params_encoder']:,}, decoder {summary['params_decoder']:,}"
        if summary["params_encoder"] is not None else "",
        f"  {summary['macs'] / 1e9:.3f} GMACs at {height}x{width}, output {summary['output_shape']}",
    ]
    return "\n".join(line for line in lines if line)
