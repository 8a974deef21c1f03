"""python -m segkit.summary [model=...] [data.image_size=[H,W]]: a model's parameters (total, encoder,
decoder), MACs at the configured input size and output shape, printed and written to summary.json.

    python -m segkit.summary model=segnet_mobilenetv2 data.image_size=[320,320]
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH, to_plain
from segkit.models import without_pretrained_weights
from segkit.models.summary import format_summary, summarize


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="summary")
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
