"""Optional integrations (segkit.utilities.extras): a missing one fails with the pip line that installs it."""

import sys

import pytest

from segkit.config import require_plugins
from segkit.config.validate import validate
from segkit.utilities.checks import ConfigError
from segkit.utilities.extras import MissingExtraError, extra_of, require


def not_installed(monkeypatch, *modules: str) -> None:
    """Makes `import <module>` fail as it does where the module is not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_a_missing_extra_names_the_pip_line(monkeypatch):
    not_installed(monkeypatch, "wandb")
    with pytest.raises(MissingExtraError, match=r"logger=wandb needs wandb, which is not installed \(missing: wandb\)\. "
                                                r"It comes with segkit's 'wandb' extra: pip install 'segkit\[wandb\]'"):
        require("wandb", "logger=wandb")
    assert require("onnx").__name__ == "onnx"  # installed: the module itself
    assert [extra_of(module) for module in ("onnxruntime.quantization", "tensorboard",
                                            "hydra_plugins.hydra_optuna_sweeper")] == ["export", "tensorboard", "sweeps"]
    with pytest.raises(KeyError, match="'torch' is not an optional dependency of segkit"):
        extra_of("torch")


def test_a_logger_without_its_extra_fails_before_training(make_config, monkeypatch):
    not_installed(monkeypatch, "tensorboard")
    with pytest.raises(ConfigError, match=r"logger\.tensorboard\._target_=lightning\.pytorch\.loggers\.TensorBoardLogger: "
                                          r".*pip install 'segkit\[tensorboard\]'"):
        validate(make_config("logger=tensorboard"))
    not_installed(monkeypatch, "wandb")
    # The first key that needs it: the dashboard callback (callbacks come before loggers) or the logger.
    with pytest.raises(ConfigError, match=r"(callbacks\.wandb_dashboard\._target_=segkit\.callbacks\.WandbDashboard|"
                                          r"logger\.wandb\._target_=segkit\.loggers\.wandb_logger): .*pip install "
                                          r"'segkit\[wandb\]'"):
        validate(make_config("logger=wandb"))


def test_a_sweep_plugin_without_its_extra_names_the_pip_line(monkeypatch):
    not_installed(monkeypatch, "hydra_plugins.hydra_optuna_sweeper", "hydra_plugins.hydra_submitit_launcher")
    require_plugins(["model=segnet", "optimizer.lr=0.01"])  # no plugin chosen: nothing to require
    with pytest.raises(MissingExtraError, match=r"hparams_search=optuna needs hydra_plugins.*pip install 'segkit\[sweeps\]'"):
        require_plugins(["hparams_search=optuna"])
    with pytest.raises(MissingExtraError, match=r"hydra/launcher=slurm needs .*pip install 'segkit\[sweeps\]'"):
        require_plugins(["hydra/launcher=slurm"])
