"""What `segkit predict` does: the masks and overlays of a config's inputs, from a checkpoint (`Predictor`) or
its ONNX export (`OnnxSegmenter`, through onnxruntime), and `legend.png`, the class of each colour."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from segkit.engine.figures import legend_figure, save
from segkit.engine.predictor import Predictor
from segkit.runtime.files import segment_files
from segkit.runtime.session import OnnxSegmenter


def predict(cfg: DictConfig) -> list[Path]:
    """Writes the mask (and overlay) of every image `cfg.input` names into `cfg.output`, from the
    checkpoint `cfg.ckpt_path` or the ONNX export `cfg.onnx_path`; returns the files written, in input order."""
    inputs = cfg.input  # a missing input= fails here, before the model is loaded (segkit.tasks.run_log reports it)
    if (cfg.ckpt_path is None) == (cfg.onnx_path is None):
        raise ValueError("give one of ckpt_path=... (a checkpoint) and onnx_path=... (an export of segkit.export)")
    if cfg.onnx_path is not None:
        if cfg.sliding_window:
            raise ValueError("sliding_window=true needs ckpt_path=...: the ONNX runtime predicts on resized "
                             "images only")
        if cfg.device not in ("auto", "cpu"):
            raise ValueError(f"device={cfg.device}: onnx_path=... runs on onnxruntime's CPU provider; use device=cpu")
        segmenter = OnnxSegmenter(cfg.onnx_path, image_size=cfg.image_size, tta=cfg.tta, tta_scales=cfg.tta_scales)
    else:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        segmenter = Predictor.from_checkpoint(cfg.ckpt_path, cfg.trusted_targets, image_size=cfg.image_size,
                                              tta=cfg.tta, tta_scales=cfg.tta_scales,
                                              sliding_window=cfg.sliding_window,
                                              window_overlap=cfg.window_overlap, batch_size=cfg.batch_size,
                                              device=device)
    written = segment_files(segmenter, segmenter.colormap, inputs, cfg.output, cfg.overlays, cfg.overlay_alpha)
    legend = Path(cfg.output) / "legend.png"  # what the colours of the masks and overlays mean
    if cfg.overlays and legend not in written:  # an input named legend.* has its mask there already
        class_names = segmenter.class_names if isinstance(segmenter, Predictor) else segmenter.metadata.class_names
        save(legend_figure(class_names, segmenter.colormap), legend)
    return written
