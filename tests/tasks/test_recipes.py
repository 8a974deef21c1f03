"""Training recipes: the budget-following lr schedule and BatchNorm statistics recomputed before validation."""

import importlib
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torch.optim.swa_utils import update_bn

from segkit.callbacks import RecomputeBatchNormStats
from segkit.config.validate import validate
from segkit.engine.module import SegmentationModule
from segkit.engine.schedules import BudgetSchedule, training_progress
from segkit.models.losses import (
    SegmentationLoss,
    class_weights_from_counts,
    count_class_pixels,
    lovasz_softmax_loss,
    soft_dice_loss,
)
from segkit.tasks.train import build, train
from segkit.utilities.checks import ConfigError
from tests.conftest import REPO, compose_train


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
    update_bn((images for images, _ in run.datamodule.calibration_dataloader(16)), run.module)
    assert saved and all(torch.allclose(saved[name], buffer) for name, buffer in net.named_buffers() if name in saved)


def test_recomputed_statistics_lift_a_lagging_eval_network(tmp_path):
    # A high lr over few steps: running statistics lag the weights, as in the first epochs on Pets.
    overrides = ("trainer.max_epochs=1", "optimizer.lr=0.02", "data.num_train=64", "data.num_val=32")
    with_recompute = train(compose_train(*overrides, output_dir=tmp_path / "recomputed"))
    lagging = train(compose_train(*overrides, "callbacks.recompute_batchnorm_stats=null", output_dir=tmp_path / "lag"))
    assert with_recompute["val/miou"] > lagging["val/miou"] + 0.02  # 0.329 against 0.290


def test_batchnorm_statistics_come_from_a_count_of_images_whatever_the_batch_size(make_config):
    for batch_size in (4, 8):
        run = build(make_config(f"data.batch_size={batch_size}"))
        run.datamodule.setup("fit")
        batches = [images.shape[0] for images, _ in run.datamodule.calibration_dataloader(12)]
        assert batches == {4: [4, 4, 4], 8: [8, 4]}[batch_size]


def test_recompute_batchnorm_stats_needs_a_batch():
    with pytest.raises(ValueError, match="num_images=0: expected at least 1 training image"):
        RecomputeBatchNormStats(0)


# --- losses ---------------------------------------------------------------------------------------------------

def test_soft_dice_loss_matches_a_hand_computed_value_and_leaves_ignored_pixels_out():
    # Two classes, three labelled pixels (truth 0, 0, 1) and one ignored. Logits put p(class 0) at 0.5, 0.5, 0.5.
    logits = torch.zeros(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 1, 255]]])
    labelled = target != 255
    # class 0: intersection 1.0, cardinality 1.5 + 2 -> dice (2 + 1) / (3.5 + 1); class 1: (1 + 1) / (2.5 + 1)
    expected = 1 - ((3 / 4.5) + (2 / 3.5)) / 2
    assert soft_dice_loss(logits, target, labelled).item() == pytest.approx(expected)
    assert soft_dice_loss(logits, torch.full_like(target, 255), torch.zeros_like(labelled)).item() == 0.0


def test_lovasz_softmax_loss_of_confident_predictions_is_one_minus_the_iou_of_each_class_present():
    # At one-hot probabilities the errors are 0 or 1, and the Lovasz extension of the Jaccard loss at a set's
    # indicator is the Jaccard loss itself: the mean over the labelled classes of 1 - IoU of the argmax.
    torch.manual_seed(0)
    predictions, target = torch.randint(0, 3, (2, 5, 7)), torch.randint(0, 2, (2, 5, 7))  # class 2 unlabelled
    target[0, 0, :3] = 255
    logits = F.one_hot(predictions, 3).permute(0, 3, 1, 2).float() * 100
    labelled = target != 255
    ious = [((predictions == c) & (target == c) & labelled).sum()
            / (((predictions == c) | (target == c)) & labelled).sum() for c in (0, 1)]
    assert lovasz_softmax_loss(logits, target, labelled).item() == pytest.approx(1 - sum(ious).item() / 2, abs=1e-5)
    assert lovasz_softmax_loss(logits, torch.full_like(target, 255), torch.zeros_like(labelled)).item() == 0.0


def test_lovasz_softmax_loss_gradient_moves_probability_towards_the_labels():
    torch.manual_seed(0)
    logits, target = torch.randn(1, 3, 6, 6, requires_grad=True), torch.randint(0, 3, (1, 6, 6))
    lovasz_softmax_loss(logits, target, target != 255).backward()
    # Lowering the loss raises each pixel's logit of its labelled class relative to the others.
    step = -logits.grad
    labelled_class_step = step.gather(1, target.unsqueeze(1)).squeeze(1)
    assert (labelled_class_step > step.mean(dim=1)).float().mean() > 0.9
    with torch.no_grad():
        before = lovasz_softmax_loss(logits, target, target != 255)
        after = lovasz_softmax_loss(logits + 0.5 * step / step.abs().max(), target, target != 255)
    assert after < before


def test_loss_adds_the_dice_term_and_label_smoothing_to_the_labelled_pixel_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    target[0, 0, 0] = 255
    plain = SegmentationLoss()(logits, target)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item())
    with_dice = SegmentationLoss(dice_weight=0.5)(logits, target)
    assert with_dice.item() == pytest.approx(plain.item() + 0.5 * soft_dice_loss(logits, target, target != 255).item())
    with_lovasz = SegmentationLoss(lovasz_weight=0.5)(logits, target)
    assert with_lovasz.item() == pytest.approx(
        plain.item() + 0.5 * lovasz_softmax_loss(logits, target, target != 255).item())
    smoothed = SegmentationLoss(label_smoothing=0.1)(logits, target)
    assert smoothed.item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=255, label_smoothing=0.1).item())


def test_median_frequency_weights_follow_segnets_definition():
    masks = [np.array([[0, 0, 1, 1]]), np.array([[1, 1, 1, 2]]), np.array([[255, 255, 1, 1]])]
    class_pixels, image_pixels = count_class_pixels(masks, num_classes=3)
    assert class_pixels.tolist() == [2, 7, 1]
    assert image_pixels.tolist() == [4, 10, 4]  # the ignored pixels count in no image's total
    frequency = np.array([2 / 4, 7 / 10, 1 / 4])
    median = np.median(frequency)
    names = ["a", "b", "c"]
    assert class_weights_from_counts("median_frequency", class_pixels, image_pixels, names) == pytest.approx(
        (median / frequency).tolist(), abs=1e-4)
    assert class_weights_from_counts("inverse_sqrt_frequency", class_pixels, image_pixels, names) == pytest.approx(
        np.sqrt(median / frequency).tolist(), abs=1e-4)
    with pytest.raises(ValueError, match=r"no pixel of class\(es\) \['c'\]"):
        class_weights_from_counts("median_frequency", [2, 7, 0], [4, 10, 0], names)


def test_class_weights_computed_from_the_training_masks_reach_the_loss(tmp_path):
    cfg = compose_train("loss.class_weights=median_frequency", output_dir=tmp_path)
    run = build(cfg)
    assert run.module.criterion.weight.tolist() == [1.0, 1.0, 1.0]  # building reads no data
    class_pixels, image_pixels = count_class_pixels(run.datamodule.training_masks(), 3)
    expected = class_weights_from_counts("median_frequency", class_pixels, image_pixels, ["o", "b", "e"])
    assert expected[1] == min(expected) < 1  # shapes: the background is the most frequent class
    checkpoint = torch.load(train(cfg)["best_checkpoint"], weights_only=True)
    assert checkpoint["state_dict"]["criterion.weight"].tolist() == pytest.approx(expected, abs=1e-4)
    assert checkpoint["hyper_parameters"]["class_weights"] == "median_frequency"


@pytest.mark.parametrize("override, message", [
    ("loss.class_weights=median", r"loss.class_weights='median': expected a list of numbers, null or one of"),
    ("loss.class_weights=[1.0,2.0]", r"loss.class_weights has 2 values \[1.0, 2.0\] for data.num_classes=3"),
    ("loss.class_weights=[1.0,0,1.0]", r"loss.class_weights\[1\]=0: expected a finite number > 0"),
    ("loss.label_smoothing=1.0", r"loss.label_smoothing=1.0: expected a number in \[0, 1\)"),
    ("loss.dice_weight=-1", r"loss.dice_weight=-1: expected a finite number >= 0"),
    ("loss.lovasz_weight=-0.5", r"loss.lovasz_weight=-0.5: expected a finite number >= 0"),
])
def test_a_bad_loss_setting_is_named_before_anything_is_built(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(override, output_dir=tmp_path))


# --- exponential moving average ---------------------------------------------------------------------------------

def test_ema_run_saves_and_validates_the_averaged_weights(tmp_path):
    cfg = compose_train("callbacks=ema", "callbacks.ema.decay=0.5", "trainer.max_epochs=2", output_dir=tmp_path)
    metrics = train(cfg)
    checkpoint = torch.load(metrics["best_checkpoint"], weights_only=True)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    weight = next(key for key in averaged if key.endswith("weight") and averaged[key].dim() == 4)
    assert not torch.equal(averaged[weight], current[weight])
    # segkit.eval's module is the averaged network.
    module = SegmentationModule.load_from_checkpoint(metrics["best_checkpoint"])
    assert torch.equal(module.state_dict()[weight], averaged[weight])


# --- allocator ------------------------------------------------------------------------------------------------

# Run in a fresh interpreter: an earlier test's allocations would already sit in this process's heap.
# torch asks for 64-byte aligned blocks; glibc before 2.38 splits alignment slivers off each one into its
# thread cache, where they keep a freed block from merging back to the requested size until that cache bin
# is full (7 entries). So the first few blocks after the tuning are mapped anew, as in a run's first steps;
# the steady state after them is what a training run lives in.
FAULTS_PROBE = """
import resource, torch
from segkit.utilities.allocator import keep_freed_memory, use_system_defaults
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 * 1024 * 1024)  # 64 MiB, written in full
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
use_system_defaults(); faults(); mapped_afresh = faults()
assert keep_freed_memory()
for _ in range(16):
    faults()
print(mapped_afresh, max(faults() for _ in range(4)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_freed_memory_serves_the_next_large_block_without_page_faults():
    result = subprocess.run([sys.executable, "-c", FAULTS_PROBE], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    mapped_afresh, most_reused = map(int, result.stdout.split())
    assert mapped_afresh > 10_000  # 16k pages of 4 KiB, zero-filled on first touch
    assert most_reused < mapped_afresh / 20


class AllocatorTuned(BaseException):
    """Raised by the stand-in for keep_freed_memory: the command got that far and stops there."""


@pytest.mark.parametrize("command, task_function", [
    ("segkit.train", "_hydra_main"), ("segkit.eval", "_hydra_main"), ("segkit.predict", "main"),
    ("segkit.export", "main"), ("segkit.lr_find", "main"), ("segkit.bench.__main__", "main"),
])
def test_every_command_that_runs_a_network_keeps_freed_memory_before_its_work(monkeypatch, command, task_function):
    module = importlib.import_module(command)

    def tuned():
        raise AllocatorTuned

    monkeypatch.setattr(module, "keep_freed_memory", tuned)
    # Hydra's decorator keeps the task function as __wrapped__; with cfg=None any work before the tuning fails.
    with pytest.raises(AllocatorTuned):
        getattr(module, task_function).__wrapped__(None)


def test_tradeoff_keeps_freed_memory_before_timing(monkeypatch, tmp_path):
    import segkit.tradeoff

    def tuned():
        raise AllocatorTuned

    monkeypatch.setattr(segkit.tradeoff, "keep_freed_memory", tuned)
    with pytest.raises(AllocatorTuned):
        segkit.tradeoff.main([str(tmp_path)])
