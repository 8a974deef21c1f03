"""Bad configs fail when composed, before anything is built, naming the key, the value and what was expected."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from segkit.config import CONFIG_DIR
from segkit.config.validate import validate
from segkit.tasks.train import train
from segkit.utilities.checks import ConfigError
from tests.conftest import REPO, TINY

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONFIG_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_shipped_option_passes(make_config, tmp_path, group, option):
    # File datasets need their root to exist; an empty folder is enough for the config check, given the
    # classes that data=folder otherwise reads from the folder's files.
    classes = ["data.classes=[background,object]"] if (group, option) == ("data", "folder") else []
    validate(make_config(f"{group}={option}", f"paths.data_dir={tmp_path}", *classes))


@pytest.mark.parametrize("group", ["model", "data", "optimizer", "scheduler"])
def test_unknown_group_option_lists_the_valid_ones(group):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(MissingConfigException) as raised:
            compose("train", overrides=[f"{group}=nonexistent"])
    message = str(raised.value)
    assert f"Could not find '{group}/nonexistent'" in message and f"Available options in '{group}'" in message
    assert all(path.stem in message for path in (CONFIG_DIR / group).glob("*.yaml"))


BAD_CONFIGS = {
    "mIoU threshold above 1": (["metrics.time_to_miou=[0.6,60]"],
                               r"metrics.time_to_miou\[1\]=60: expected an mIoU, "),
    "unknown encoder": (["model.encoder.name=resnet"],
                        r"model.encoder.name=resnet: unknown encoder; valid names: mobilenetv2, vgg \(or choose "
                        r"model=<one of dsc_segnet, segnet, segnet_mobilenetv2, segnet_vgg16bn>\)"),
    "misspelt datamodule": (["data._target_=segkit.data.PetDataModule"],
                            r"data._target_=segkit.data.PetDataModule: cannot be imported; close names: "
                            r"segkit.data.PetsDataModule, "),
    "not a datamodule": (["data._target_=torch.nn.Identity"],
                         r"data._target_=torch.nn.Identity: expected a SegmentationDataModule; choose data=<one of "
                         r"folder, pets, sbd, shapes, voc, voc_aug>, or subclass segkit.data.SegmentationDataModule"),
    "misspelt optimizer": (["optimizer._target_=torch.optim.Adamm"],
                           r"optimizer._target_=torch.optim.Adamm: cannot be imported; close names: "
                           r"torch.optim.Adam, "),
    "misspelt scheduler": (["scheduler._target_=torch.optim.lr_scheduler.CosineAnealingLR"],
                           r"close names: torch.optim.lr_scheduler.CosineAnnealingLR"),
    "misspelt transform": (["data.train_transforms.0._target_=albumentations.HorizontalFlp"],
                           r"data.train_transforms\[0\]._target_=albumentations.HorizontalFlp: cannot be imported; "
                           r"close names: albumentations.HorizontalFlip$"),
    "unknown transform": (["data.val_transforms=[{_target_: albumentations.Flop}]"],
                          r"data.val_transforms\[0\]._target_=albumentations.Flop: cannot be imported; albumentations "
                          r"transforms: .*HorizontalFlip, .*RandomCrop, .*VerticalFlip"),
    "not a transform": (["data.train_transforms.1._target_=torch.nn.Identity"],
                        r"data.train_transforms\[1\]._target_=torch.nn.Identity: expected an albumentations transform"),
    "unknown transform in a composition": (
        ["data.train_transforms=[{_target_: albumentations.OneOf, transforms: [{_target_: albumentations.Flop}]}]"],
        r"data.train_transforms\[0\].transforms\[0\]._target_=albumentations.Flop: cannot be imported"),
    "class count": (["data.num_classes=4"],
                    r"data.num_classes=4: ShapesDataModule has 3 classes \['object', 'background', 'border'\]; "
                    r"expected data.num_classes=3"),
    "model class count": (["model.num_classes=5"], r"model.num_classes=5: expected data.num_classes=3"),
    "image too small": (["data.image_size=[8,8]"],
                        r"data.image_size=\[8, 8\]: too small for dsc_segnet, whose 4 downsamplings need at least "
                        r"16 x 16 pixels; expected data.image_size of at least \[16,16\]"),
    "image too small for vgg16": (["model=segnet_vgg16bn", "data.image_size=[24,40]"],
                                  r"data.image_size=\[24, 40\]: too small for segnet_vgg16bn, whose 5 downsamplings "
                                  r"need at least 32 x 32"),
    "image size shape": (["data.image_size=[32]"], r"data.image_size=\[32\]: expected \[height, width\]"),
    "negative lr": (["optimizer.lr=-0.001"], r"optimizer.lr=-0.001: expected a finite number > 0"),
    "zero lr": (["optimizer=sgd", "optimizer.lr=0"], r"optimizer.lr=0: expected a finite number > 0"),
    "lr factor": (["optimizer.encoder_lr_factor=0"], r"optimizer.encoder_lr_factor=0: expected a finite number > 0"),
    "infinite lr": (["optimizer.lr=inf"], r"optimizer.lr=inf: expected a finite number > 0"),
    "endless epochs": (["trainer.max_epochs=-1"],
                       r"trainer.max_epochs=-1: expected an integer >= 1, the number of epochs \(the cosine and poly "
                       r"schedules span it; for a time budget set trainer.max_time=DD:HH:MM:SS as well\)"),
    "no epochs": (["trainer.max_epochs=0"], r"trainer.max_epochs=0: expected an integer >= 1"),
    "epochs not a number": (["trainer.max_epochs=abc"], r"trainer.max_epochs=abc: expected an integer >= 1"),
    "min epochs": (["trainer.min_epochs=9"], r"trainer.min_epochs=9: expected an integer from 0 to 1"),
    "cosine period": (["scheduler.T_max=0"], r"scheduler.T_max=0: expected an integer >= 1"),
    "poly length": (["scheduler=poly", "scheduler.total_iters=-2"],
                    r"scheduler.total_iters=-2: expected an integer >= 1"),
    "step size": (["scheduler=step", "scheduler.gamma=0"], r"scheduler.gamma=0: expected a finite number > 0"),
    "test-time augmentation": (["tta=rotate"],
                               r"tta='rotate' is not a test-time augmentation; expected one of \[None, 'flip'\]"),
    "test-time scales": (["tta_scales=[0.75,0]"],
                         r"tta_scales=\[0.75, 0\]: expected a list of distinct positive scale factors"),
    "seed not a number": (["seed=abc"], r"seed=abc: expected an integer from 0 to 4294967295"),
    "batch size": (["data.batch_size=0"], r"data.batch_size=0: expected an integer >= 1"),
    "negative batch size": (["data.batch_size=-8"], r"data.batch_size=-8: expected an integer >= 1"),
    "workers": (["data.num_workers=-1"], r"data.num_workers=-1: expected an integer >= 0"),
    "upsample mode": (["model.upsample=nearest"],
                      r"model=dsc_segnet cannot be built from its config: upsample='nearest' is not an upsampling "
                      r"mode; expected one of \['unpool', 'bilinear'\]"),
    "encoder argument": (["+model.encoder.depth=3"], r"unexpected keyword argument 'depth'"),
    "pets mode": (["data=pets", "data.mode=quad"], r"data.mode must be one of \['trimap', 'binary'\], got 'quad'"),
    "pets class count": (["data=pets", "data.num_classes=2"],
                         r"data.num_classes=2: PetsDataModule has 3 classes \['pet', 'background', 'border'\]"),
    "callback setting without its object": (["experiment=pets_dsc_segnet", "callbacks=default"],
                                            r"callbacks.ema: expected an object's config with a _target_, or null to "
                                            r"turn it off; got \{'decay': 0.9975\} .*callbacks configs: default, "
                                            r"early_stopping, ema$"),
    "logger not an object": (["+logger.csv2=3"], r"logger.csv2: expected an object's config .* got 3"),
    "bad-sample policy": (["data=pets", "data.on_bad_sample=ignore"],
                          r"data.on_bad_sample must be one of \('error', 'skip'\), got 'ignore'"),
}


@pytest.mark.parametrize(("overrides", "expected"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_value_names_key_value_and_expectation(make_config, tmp_path, overrides, expected):
    cfg = make_config(f"paths.data_dir={tmp_path}", *overrides)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=expected):
        validate(cfg)
    assert time.perf_counter() - started < 2.0  # a check, not a run


def test_compositions_of_transforms_are_pipeline_steps(make_config):
    # albumentations' OneOf, SomeOf and Sequential compose transforms; they are steps of a pipeline as transforms are.
    cfg = make_config("data.train_transforms=[{_target_: albumentations.OneOf, p: 1.0, transforms: ["
                      "{_target_: albumentations.HorizontalFlip, p: 1.0}, {_target_: albumentations.VerticalFlip, p: 1.0}]}]")
    validate(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    image, _ = datamodule.train_set.samples[0]
    flipped = datamodule.train_set[0][0].permute(1, 2, 0).numpy() * 0.25 + 0.5  # shapes' mean 0.5, std 0.25
    assert any(np.abs(flipped * 255 - mirror).max() <= 1.0 for mirror in (image[:, ::-1], image[::-1]))


def test_missing_data_root_names_it_unless_downloading(make_config, tmp_path):
    missing = tmp_path / "datasets"
    cfg = make_config("data=pets", f"data.root={missing}")
    with pytest.raises(ConfigError, match=rf"data.root={missing}: folder not found .*or data.download=true"):
        validate(cfg)
    validate(make_config("data=pets", f"data.root={missing}", "data.download=true"))


def test_missing_checkpoint_names_the_key(make_config, tmp_path):
    with pytest.raises(ConfigError, match=rf"ckpt_path={tmp_path}/gone.ckpt: checkpoint not found"):
        validate(make_config(f"ckpt_path={tmp_path}/gone.ckpt"))


def test_train_rejects_a_bad_config_before_building_or_writing_anything(make_config):
    cfg = make_config("optimizer.lr=-1")
    with pytest.raises(ConfigError, match=r"optimizer.lr=-1: expected a finite number > 0"):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_command_line_reports_the_config_error_in_one_message_and_exits_1(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run(
        [sys.executable, "-m", "segkit.train", *TINY, "data.batch_size=0", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 1
    # One message, not a traceback (segkit.tasks.run_log.RunLog).
    assert result.stderr.splitlines() == [
        "segkit.train: error: data.batch_size=0: expected an integer >= 1",
        f"  (traceback in {tmp_path / 'run' / 'train.log'}; HYDRA_FULL_ERROR=1 prints it here)",
    ]
    assert not (tmp_path / "run" / "checkpoints").exists()
    # The reason, with its traceback, is in the run's log file.
    logged = (tmp_path / "run" / "train.log").read_text()
    assert "train failed" in logged and "Traceback" in logged
    assert "segkit.utilities.checks.ConfigError: data.batch_size=0: expected an integer >= 1" in logged
