"""What `segkit summary` does: a model's parameters (total, encoder, decoder), MACs at the configured input size and
output shape, written to summary.json and returned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.config import to_plain
from segkit.models import without_pretrained_weights
from segkit.models.summary import summarize


def summarize_model(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """The summary of `cfg.model` at `cfg.data.image_size`, and the summary.json it was written to."""
    # Only shapes are counted, so no pretrained weights are needed.
    net = instantiate(without_pretrained_weights(to_plain(cfg.model)))
    summary = summarize(net, cfg.data.image_size)
    path = Path(cfg.paths.output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary, path
