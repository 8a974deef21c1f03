"""segkit's Hydra configs: where they live (`CONFIG_DIR`), the Hydra plugins a command line chooses, how entry
points turn them into plain data (`to_plain`) and conf/'s resolvers (`data_num_classes`, `new_folder`), registered
when this package is imported: every command imports it, and so does a script that composes conf/ with Hydra's
`compose` (it needs `CONFIG_DIR`). `segkit.config.validate` checks a composed config."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from segkit.utilities.extras import require

# conf/ sits at the top of the repository and is installed into the wheel as segkit/conf (pyproject.toml): the
# installed copy when there is one, else the source tree's (an editable install, or PYTHONPATH=<checkout>).
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_INSTALLED_CONFIG_DIR = _PACKAGE_DIR / "conf"
CONFIG_DIR = _INSTALLED_CONFIG_DIR if _INSTALLED_CONFIG_DIR.is_dir() else _PACKAGE_DIR.parent / "conf"
# What the commands give `hydra.main(config_path=...)`: an absolute path, so any working directory works.
CONFIG_PATH = str(CONFIG_DIR)


# Command-line choices of a Hydra plugin that one of segkit's extras installs -> the plugin's module.
PLUGIN_CHOICES = {
    "hparams_search=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
}


def require_plugins(arguments: list[str]) -> None:
    """Fails (`MissingExtraError`, with its pip line) when the command line chooses a Hydra plugin that is not
    installed: Hydra itself would only say that it cannot find the config option."""
    for argument in arguments:
        plugin = PLUGIN_CHOICES.get(argument.lstrip("+~").replace(" ", ""))
        if plugin is not None:
            require(plugin, argument)


def to_plain(cfg: DictConfig | None) -> Any:
    """A resolved, plain-Python copy of a config node (None for an absent or empty one), fit for
    checkpoints and loggers."""
    if cfg is None or (isinstance(cfg, DictConfig) and not cfg):
        return None
    return OmegaConf.to_container(cfg, resolve=True)


def _data_num_classes(*, _parent_: DictConfig) -> int:
    """`num_classes: ${data_num_classes:}` in a data config: the number of classes its datamodule finds
    from that config (data=folder: from the folder), so the model's `num_classes` follows."""
    return len(get_class(_parent_._target_).config_class_names(_parent_))


# Registered here, in the package every command and every script composing conf/ imports CONFIG_DIR from, so that
# any composition of conf/ resolves, whichever datamodule was imported.
OmegaConf.register_new_resolver("data_num_classes", _data_num_classes, replace=True)


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
