"""Where segkit's Hydra configs live, how entry points turn them into plain data, and the resolver that gives
every run its own folder."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# conf/ sits beside the package in the project root; segkit is installed editable (`make install`).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def to_plain(cfg: DictConfig | None) -> Any:
    """A resolved, plain-Python copy of a config node (None for an absent or empty one), fit for
    checkpoints and loggers."""
    if cfg is None or (isinstance(cfg, DictConfig) and not cfg):
        return None
    return OmegaConf.to_container(cfg, resolve=True)


def new_folder(path: str) -> str:
    """Creates and returns `path`, or `path_1`, `path_2`, ... when it exists: the folder of a run that no other
    run shares. `os.mkdir` fails when the folder exists, also for a process doing the same at the same moment, so
    two runs started in the same second (the run folders' names) still get a folder each."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count():
        candidate = base.with_name(f"{base.name}_{number}") if number else base
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)


# conf/hydra/default.yaml: hydra.run.dir and hydra.sweep.dir. Cached, as Hydra's ${now:} is: every reading of the
# run folder in one run gives the same one, and a multirun's jobs share their sweep folder (Hydra copies the cache).
OmegaConf.register_new_resolver("new_folder", new_folder, use_cache=True, replace=True)
