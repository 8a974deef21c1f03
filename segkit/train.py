"""python -m segkit.train: trains a model on a dataset, both chosen by config, and writes metrics.json.

    python -m segkit.train                                  # dsc_segnet on the built-in shapes data
    python -m segkit.train model=segnet trainer.max_epochs=1 optimizer.lr=0.01
"""

from __future__ import annotations

import sys

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from segkit.callbacks import INTERRUPTED_EXIT_CODE
from segkit.config import CONFIG_PATH, require_plugins
from segkit.tasks.train import train
from segkit.utilities.allocator import keep_freed_memory
from segkit.utilities.extras import MissingExtraError


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    keep_freed_memory()
    try:
        metrics = train(cfg)
    except SIGTERMException:
        sys.exit(INTERRUPTED_EXIT_CODE)  # LastCheckpoint has saved last.ckpt
    return metrics.get(cfg.optimized_metric)


def main() -> None:
    try:
        require_plugins(sys.argv[1:])  # hparams_search=optuna, hydra/launcher=slurm: segkit's `sweeps` extra
    except MissingExtraError as error:
        sys.exit(f"segkit.train: {error}")
    _hydra_main()


if __name__ == "__main__":
    main()
