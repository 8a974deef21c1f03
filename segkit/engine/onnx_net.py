"""An exported ONNX file as a network and a module (`onnx_module`), for segkit.eval's metrics and the export
bench: onnxruntime computes the logits (segkit's `export` extra)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segkit.engine.module import SegmentationModule
from segkit.runtime.session import inference_session, read_metadata


class OnnxNet(nn.Module):
    """An exported file as a network: N x 3 x H x W tensors in, onnxruntime's logits out, with the
    metadata's classes and normalisation (`input_mean`, `input_std`) for the datamodule to take."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = inference_session(self.path, threads)
        self.metadata = read_metadata(self.session, self.path)
        self.input_mean, self.input_std = tuple(self.metadata.mean), tuple(self.metadata.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"images": images.detach().cpu().float().numpy()})
        return torch.from_numpy(logits)


def onnx_module(path: str | Path, ignore_index: int = 255) -> SegmentationModule:
    """A module for Lightning's test loop (segkit.eval's metrics and loss) whose network is the ONNX file."""
    net = OnnxNet(path)
    names = net.metadata.class_names
    # No optimizer: the module is only evaluated.
    return SegmentationModule(net, num_classes=len(names), optimizer=None, ignore_index=ignore_index,
                              class_names=names).eval()
