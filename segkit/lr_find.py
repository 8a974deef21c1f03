"""python -m segkit.lr_find: the learning-rate range test (`segkit.tasks.lr_find`) on the configured model and data;
writes lr_find.png and lr_find.json and prints the suggested lr.

    python -m segkit.lr_find model=dsc_segnet data=pets data.root=~/datasets
    python -m segkit.train lr_find=true ...        # find the lr, then train with it
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH
from segkit.tasks.lr_find import lr_find
from segkit.utilities.allocator import keep_freed_memory


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="lr_find")
def main(cfg: DictConfig) -> float | None:
    keep_freed_memory()
    result = lr_find(cfg)
    return result["suggested_lr"] if result else None


if __name__ == "__main__":
    main()
