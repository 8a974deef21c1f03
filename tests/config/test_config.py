import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from segkit.config import CONFIG_DIR
from segkit.tasks.train import build

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


def test_lightnings_trainer_keys_need_no_plus(make_config):
    cfg = make_config("trainer.fast_dev_run=true", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                      "trainer.overfit_batches=0", "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=1.0",
                      "trainer.val_check_interval=0.5")
    trainer = build(cfg).trainer
    assert trainer.fast_dev_run == 1 and trainer.accumulate_grad_batches == 2 and trainer.gradient_clip_val == 1.0
    defaults = make_config().trainer
    assert (defaults.limit_train_batches, defaults.fast_dev_run, defaults.overfit_batches,
            defaults.accumulate_grad_batches, defaults.gradient_clip_val) == (None, False, 0.0, 1, None)


# A library user composing conf/ with Hydra: nothing of segkit imported but the config location.
COMPOSE_PETS = """
import sys
from hydra import compose, initialize_config_dir
from segkit.config import CONFIG_DIR
with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
    trimap = compose("summary", overrides=["data=pets"])
    binary = compose("summary", overrides=["data=pets", "data.mode=binary"])
print(trimap.data.num_classes, binary.data.num_classes, trimap.model.num_classes)
"""


def test_pets_num_classes_resolves_in_any_composition():
    result = subprocess.run([sys.executable, "-c", COMPOSE_PETS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["3", "2", "3"]
