"""python -m segkit.summary [model=...] [data.image_size=[H,W]]: a model's parameters (total, encoder,
decoder), MACs at the configured input size and output shape, printed and written to summary.json.

    python -m segkit.summary model=segnet_mobilenetv2 data.image_size=[320,320]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH
from segkit.models.summary import format_summary
from segkit.tasks.summary import summarize_model


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="summary")
def main(cfg: DictConfig) -> None:
    summary, path = summarize_model(cfg)
    print(format_summary(summary))
    print(f"  summary: {path}")


if __name__ == "__main__":
    main()
