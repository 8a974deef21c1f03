"""Training recipes: the budget-following lr schedule and BatchNorm statistics recomputed before validation."""

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from torch.optim.swa_utils import update_bn

from segkit.callbacks import RecomputeBatchNormStats
from segkit.schedules import BudgetSchedule, training_progress
from segkit.run import build, train

from .conftest import compose_train


def _schedule(**kwargs) -> BudgetSchedule:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return BudgetSchedule(optimizer, **kwargs)


def test_budget_schedule_warms_up_linearly_then_decays_to_min_factor():
    cosine = _schedule(shape="cosine", warmup=0.1, min_factor=0.01)
    assert cosine.factor(0.0) == 0.01  # from 1%, so the first step moves the weights
    assert cosine.factor(0.05) == pytest.approx(0.5)
    assert cosine.factor(0.1) == pytest.approx(1.0)
    assert cosine.factor(0.55) == pytest.approx(0.01 + 0.99 * 0.5)
    assert cosine.factor(1.0) == pytest.approx(0.01)
    poly = _schedule(shape="poly", power=0.9)
    assert poly.factor(0.5) == pytest.approx(0.5**0.9)
    assert poly.factor(1.0) == 0.0
    assert _schedule(shape="constant", warmup=0.2).factor(0.9) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": "linear"}, r"scheduler.shape='linear' is not a schedule shape; expected one of \['cosine', 'poly'"),
    ({"warmup": 1.0}, r"scheduler.warmup=1.0: expected a fraction of the run in \[0, 1\)"),
    ({"min_factor": 2}, r"scheduler.min_factor=2: expected a factor in \[0, 1\]"),
])
def test_budget_schedule_names_a_bad_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _schedule(**kwargs)


def test_progress_is_the_larger_of_steps_and_time_used():
    timer = Timer(duration={"seconds": 100})
    timer.time_elapsed = lambda stage="train": 30.0
    timer.time_remaining = lambda stage="train": 70.0
    trainer = SimpleNamespace(estimated_stepping_batches=1000, global_step=100, callbacks=[timer])
    assert training_progress(trainer) == pytest.approx(0.3)  # the time budget ends first
    trainer.global_step = 500
    assert training_progress(trainer) == pytest.approx(0.5)
    no_budget = SimpleNamespace(estimated_stepping_batches=math.inf, global_step=10, callbacks=[])
    assert training_progress(no_budget) == 0.0


def test_a_run_cut_short_by_max_time_ends_near_the_bottom_of_its_schedule(make_config):
    # max_epochs alone would plan 1000 epochs: only the time budget can bring the lr down.
    cfg = make_config("scheduler=warmup_cosine", "trainer.max_epochs=1000", "trainer.max_time=00:00:00:04",
                      "data.num_train=16", "data.num_val=8", "callbacks.recompute_batchnorm_stats=null")
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert 1 <= run.trainer.current_epoch < 1000
    lr = run.trainer.optimizers[0].param_groups[0]["lr"]
    assert lr < 0.1 * cfg.optimizer.lr


def test_validation_sees_batchnorm_statistics_recomputed_with_the_current_weights(make_config):
    cfg = make_config("trainer.max_epochs=1", "optimizer.lr=0.01")
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    net = run.module.net
    saved = {name: buffer.clone() for name, buffer in net.named_buffers() if "running" in name}
    # Statistics recomputed from scratch over the same calibration batches give the same buffers.
    update_bn((images for images, _ in run.datamodule.calibration_dataloader(2)), run.module)
    assert saved and all(torch.allclose(saved[name], buffer) for name, buffer in net.named_buffers() if name in saved)


def test_recomputed_statistics_lift_a_lagging_eval_network(tmp_path):
    # A high lr over few steps: running statistics lag the weights, as in the first epochs on Pets.
    overrides = ("trainer.max_epochs=1", "optimizer.lr=0.02", "data.num_train=64", "data.num_val=32")
    with_recompute = train(compose_train(*overrides, output_dir=tmp_path / "recomputed"))
    lagging = train(compose_train(*overrides, "callbacks.recompute_batchnorm_stats=null", output_dir=tmp_path / "lag"))
    assert with_recompute["val/miou"] > lagging["val/miou"] + 0.02  # 0.329 against 0.290


def test_recompute_batchnorm_stats_needs_a_batch():
    with pytest.raises(ValueError, match="num_batches=0: expected at least 1"):
        RecomputeBatchNormStats(0)
