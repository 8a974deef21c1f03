from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from segkit.config import CONFIG_DIR
from segkit.run import build

# Hydra's own group is checked by the command-line tests, which run under Hydra.
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONFIG_DIR / group).glob("*.yaml"))]


def test_train_config_has_the_documented_groups():
    assert {"model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "paths",
            "experiment", "debug"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_of_every_group_composes_and_builds(make_config, group, option, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # data=folder needs its folder, and reads its classes from the folder's files unless the config names them.
    classes = ["data.classes=[background,object]", f"data.root={tmp_path}"] if (group, option) == ("data", "folder") else []
    cfg = make_config(f"{group}={option}", *classes)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    run = build(cfg)
    logits = run.module.eval()(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, cfg.data.num_classes, 64, 64)
    optimizers = run.module.configure_optimizers()
    assert isinstance(optimizers["optimizer"], torch.optim.Optimizer)
    assert ("lr_scheduler" in optimizers) == bool(cfg.get("scheduler"))


def test_command_line_values_override_any_key(make_config):
    cfg = make_config("optimizer.lr=0.01", "data.batch_size=8", "model=segnet", "trainer.max_epochs=3",
                      "optimizer=sgd", "scheduler=poly")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.01
    assert cfg.data.batch_size == 8
    assert cfg.model.name == "segnet"
    assert cfg.scheduler.total_iters == 3  # follows trainer.max_epochs


def test_defaults_are_dsc_segnet_on_shapes_judged_by_val_miou(make_config):
    cfg = make_config(tiny=False)
    assert cfg.model.name == "dsc_segnet"
    assert cfg.data._target_ == "segkit.data.ShapesDataModule"
    assert cfg.optimized_metric == "val/miou"
    assert cfg.callbacks.model_checkpoint.monitor == "val/miou" and cfg.callbacks.model_checkpoint.mode == "max"
    assert cfg.model.num_classes == cfg.data.num_classes == 3


def test_experiments_are_global_packages():
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")) + sorted((CONFIG_DIR / "debug").glob("*.yaml")):
        assert Path(path).read_text().startswith("# @package _global_"), path
