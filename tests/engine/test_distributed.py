"""trainer=ddp: two CPU processes (gloo) per run, one run folder per run or multirun job, with the default
callbacks (rich progress bar, model summary), which read metrics on rank 0 only."""

import copy
import csv
import json
import os
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from hydra.conf import ConfigSourceInfo
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn

from segkit.config import CONFIG_DIR
from segkit.engine.distributed import (
    DISTRIBUTED_ENVIRON,
    CPUSyncBatchNorm,
    CPUSyncBatchNormPlugin,
    HydraDDPStrategy,
    HydraJobLauncher,
    child_command,
)
from segkit.engine.module import SegmentationModule
from segkit.tasks.train import build, train
from tests.conftest import DDP, REPO, run_train

# 32 images in batches of 8: 4 steps per epoch in one process, 2 in each of two.
STEPS_PER_EPOCH = {1: 4, 2: 2}


def files_below(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def run_files(run_dir: Path) -> set[str]:
    """What one DDP run writes: rank 0's files and rank 1's log, nothing from rank 1's own Hydra."""
    best = Path(json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"])
    return {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "config.yaml", "metrics.json",
            "train.log", "train_rank1.log", "csv/metrics.csv", "csv/hparams.yaml", "checkpoints/last.ckpt",
            str(best.relative_to(run_dir))}


def test_ddp_config_builds_hydra_ddp_with_sync_batchnorm(make_config):
    cfg = make_config("trainer=ddp", "trainer.devices=2")
    assert cfg.trainer.sync_batchnorm is True and cfg.trainer.num_nodes == 1
    trainer = build(cfg).trainer
    assert isinstance(trainer.strategy, HydraDDPStrategy)
    assert isinstance(trainer.strategy.launcher, HydraJobLauncher)
    assert trainer.strategy._ddp_kwargs == {"find_unused_parameters": False}
    assert trainer.world_size == 2 and trainer.is_global_zero


def test_child_processes_rerun_the_multirun_job_as_a_single_run_in_its_folder(tmp_path, monkeypatch):
    """What Lightning would rerun (sys.argv: -m and the sweep list) against what segkit runs: the job."""
    job_overrides = ["trainer=ddp", "optimizer.lr=0.002", "data.image_size=[32,32]"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=job_overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "1")
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.name = "train"  # what `python -m segkit.train` names the job
        # As `--config-dir /extra` leaves it.
        cfg.hydra.runtime.config_sources.append(ConfigSourceInfo(path="/extra", schema="file", provider="command-line"))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "trainer=ddp", "optimizer.lr=1e-3,2e-3"])
    HydraConfig.instance().set_config(cfg)
    try:
        command, cwd = child_command(global_rank=3)
    finally:
        HydraConfig.instance().cfg = None
    assert command[0] == sys.executable and "-m" not in command[2:] and cwd == str(tmp_path)
    assert command[command.index("--config-name=train"):] == [
        "--config-name=train",
        f"--config-path={CONFIG_DIR}",
        "--config-dir=/extra",
        *job_overrides,
        f"hydra.run.dir='{tmp_path / 'sweep' / '1'}'",
        "hydra.output_subdir=null",
        "hydra.job.name=train_rank3",
        "hydra.job.chdir=false",
    ]


def test_ddp_outside_a_hydra_job_says_how_to_start_it(make_config):
    environ_before = {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRON}
    with pytest.raises(RuntimeError, match="python -m segkit.train trainer=ddp"):
        train(make_config("trainer=ddp", "trainer.devices=2"))
    # Nothing left behind that would make the next run in this process expect processes it did not start.
    assert {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRON} == environ_before


def test_ddp_run_with_the_default_callbacks_trains_on_two_processes_into_one_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train([*DDP, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout_s=240)

    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no second folder from the other process
    assert files_below(run_dir) == run_files(run_dir)
    assert result.stdout.count("segkit: dsc_segnet") == 1  # the summary, from rank 0 only
    # The callbacks that read metrics on rank 0 alone were on: the model summary and the rich progress bar.
    assert "trainable parameters" in result.stdout and "Validation ━" in result.stdout
    resolved = (run_dir / "config.yaml").read_text()
    assert "sync_batchnorm: true" in resolved and "segkit.engine.distributed.HydraDDPStrategy" in resolved

    # Each process trained on half of every epoch: half the optimizer steps of one process.
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == STEPS_PER_EPOCH[2]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert len([r for r in rows if r["train/loss_step"]]) == STEPS_PER_EPOCH[2]

    # The reported numbers are those of the whole validation set (16 images, 8 per process): one process
    # validating the best checkpoint on every image gets the same mIoU and loss.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    module = SegmentationModule.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    datamodule = instantiate(OmegaConf.load(run_dir / "config.yaml").data)
    datamodule.use_normalisation_of(module.net)  # the data config's own mean and std, as training
    single = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    expected = single.validate(module, datamodule=datamodule, verbose=False)[0]
    assert metrics["val/miou"] == pytest.approx(expected["val/miou"], abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-5)


@pytest.mark.slow  # wandb's service starts on top of a 2-process run
def test_ddp_run_with_the_wandb_dashboard_finishes_and_logs_offline(tmp_path):
    run_dir = tmp_path / "run"
    run_train([*DDP, "logger=wandb", f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout_s=300,
              WANDB_MODE="offline", WANDB_API_KEY="")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/miou"] <= 1.0 and metrics["epochs"] == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # rank 0's run only


@pytest.mark.slow  # two 2-process jobs: about 40 s
def test_ddp_multirun_gives_each_job_one_folder(tmp_path):
    sweep_dir = tmp_path / "sweep"
    outputs_before = files_below(REPO / "outputs") if (REPO / "outputs").exists() else set()
    run_train(["-m", *DDP, "model=dsc_segnet", "optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)

    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1", "multirun.yaml", "multirun_summary.csv"]
    assert len((sweep_dir / "multirun_summary.csv").read_text().splitlines()) == 3  # header and one row per job
    for job, lr in (("0", 0.001), ("1", 0.002)):
        job_dir = sweep_dir / job
        assert files_below(job_dir) == run_files(job_dir)
        assert f"lr: {lr}" in (job_dir / "config.yaml").read_text()
        assert torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert (files_below(REPO / "outputs") if (REPO / "outputs").exists() else set()) == outputs_before


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_cpu(make_config):
    """One step: bfloat16 is emulated on CPUs without its instructions (the shared 2-core AVX2 machine took 392 s
    for TINY's 4 steps, 150 s for this)."""
    cfg = make_config("trainer.precision=bf16-mixed", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["val/loss"])) and 0.0 <= metrics["val/miou"] <= 1.0
    # Mixed precision keeps float32 weights; only the computation runs in bfloat16.
    state = torch.load(metrics["last_checkpoint"], weights_only=True)["state_dict"]
    assert {value.dtype for key, value in state.items() if key.endswith(".weight")} == {torch.float32}


def _sync_batchnorm_worker(rank: int, world_size: int, init_file: str) -> None:
    """Process `rank` of `world_size` normalises its share of one batch with CPUSyncBatchNorm; everything must
    equal BatchNorm2d over the whole batch in one process."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    inputs = torch.randn(8, 3, 5, 5) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2.0
    loss_weights = torch.randn(8, 3, 5, 5)
    reference = nn.BatchNorm2d(3)
    nn.init.normal_(reference.weight)
    nn.init.normal_(reference.bias)
    model = nn.Sequential(copy.deepcopy(reference))

    whole = inputs.clone().requires_grad_()
    expected = reference(whole)
    (expected * loss_weights).sum().backward()

    CPUSyncBatchNormPlugin().apply(model)
    assert type(model[0]) is CPUSyncBatchNorm
    share = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
    local = inputs[share].clone().requires_grad_()
    output = model(local)
    (output * loss_weights[share]).sum().backward()

    torch.testing.assert_close(output, expected[share])
    torch.testing.assert_close(local.grad, whole.grad[share])
    for parameter, reference_parameter in zip(model[0].parameters(), reference.parameters()):
        dist.all_reduce(parameter.grad)  # the summed gradients of the shares: the whole batch's
        torch.testing.assert_close(parameter.grad, reference_parameter.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(model[0], name), getattr(reference, name))

    CPUSyncBatchNormPlugin().revert(model)
    assert type(model[0]) is nn.BatchNorm2d
    torch.testing.assert_close(model.eval()(inputs), reference.eval()(inputs))
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path):
    mp.spawn(_sync_batchnorm_worker, args=(2, str(tmp_path / "store")), nprocs=2)
