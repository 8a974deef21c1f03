"""python -m segkit.summary [model=...] [data.image_size=[H,W]]: a model's parameters (total, encoder,
decoder), MACs at the configured input size and output shape, printed and written to summary.json.

    python -m segkit.summary model=segnet_mobilenetv2 data.image_size=[320,320]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segkit.config import CONFIG_DIR, to_plain
from segkit.models import count_parameters, without_pretrained_weights


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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="summary")
def main(cfg: DictConfig) -> None:
    # Only shapes are counted, so no pretrained weights are needed.
    net = instantiate(without_pretrained_weights(to_plain(cfg.model)))
    summary = summarize(net, cfg.data.image_size)
    path = Path(cfg.paths.output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"  summary: {path}")


if __name__ == "__main__":
    main()
