"""Training faults: a NaN or infinite loss, weight, batch norm statistic or validation loss stops the run naming
the step and keeps the last good checkpoint; the same seed gives the same metrics on CPU."""

import math
from pathlib import Path

import pytest
import torch

from segkit.callbacks import NonFiniteError
from segkit.checkpoints import read_checkpoint
from segkit.engine.module import SegmentationModule
from segkit.tasks.train import train
from tests.conftest import compose_train

# TINY trains 4 steps an epoch (32 images in batches of 8): step 6 is the third batch of the second epoch.
BAD_STEP = 6


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(make_config, monkeypatch):
    training_step = SegmentationModule.training_step
    seen = {}

    def poisoned(module, batch, batch_idx):
        loss = training_step(module, batch, batch_idx)
        seen["module"] = module
        return loss * math.nan if module.global_step == BAD_STEP else loss

    monkeypatch.setattr(SegmentationModule, "training_step", poisoned)
    cfg = make_config("trainer.max_epochs=2")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    expected = (rf"the training loss is nan at global step {BAD_STEP} \(epoch 1, batch 2\); training stopped "
                rf"before the weights were updated with it\. The last good checkpoint is {last}: resume from it "
                rf"with ckpt_path={last}\. Usual causes: a learning rate too high")
    with pytest.raises(NonFiniteError, match=expected):
        train(cfg)
    # The weights in memory never took the bad step, and the checkpoint of the first epoch is untouched.
    assert all(torch.isfinite(p).all() for p in seen["module"].parameters())
    saved = read_checkpoint(last)
    assert saved["epoch"] == 0 and saved["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point())
    assert SegmentationModule.load_from_checkpoint(last, weights_only=True).hparams.num_classes == 3


def test_infinite_loss_before_any_checkpoint_says_so(make_config, monkeypatch):
    monkeypatch.setattr(SegmentationModule, "training_step",
                        lambda module, batch, batch_idx: torch.tensor(math.inf, requires_grad=True))
    expected = r"loss is inf at global step 0 \(epoch 0, batch 0\).*No checkpoint was saved before it"
    with pytest.raises(NonFiniteError, match=expected):
        train(make_config())


def test_diverging_weights_with_a_finite_loss_stop_before_any_bad_checkpoint(make_config):
    """optimizer.lr=1e6 keeps the training loss finite (training normalises with the batch's statistics) while the
    running variances overflow: the state must not become a checkpoint."""
    cfg = make_config("optimizer.lr=1e6")
    expected = (r"net\.encoder\.\S+\.running_var holds NaN or infinite values after global step 4 \(epoch 0\); "
                r"training stopped without saving that state\. No checkpoint was saved before it")
    with pytest.raises(NonFiniteError, match=expected):
        train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert not checkpoints.exists() or not list(checkpoints.iterdir())


def test_infinite_validation_loss_stops_before_the_epoch_is_saved(make_config, monkeypatch):
    on_validation_epoch_end = SegmentationModule.on_validation_epoch_end

    def poisoned(module):
        if module.current_epoch == 1 and not module.trainer.sanity_checking:
            module.val_loss.update(torch.tensor(math.inf))
        on_validation_epoch_end(module)

    monkeypatch.setattr(SegmentationModule, "on_validation_epoch_end", poisoned)
    cfg = make_config("trainer.max_epochs=2")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    expected = (rf"the validation loss is inf after global step 8 \(epoch 1\); training stopped before this state "
                rf"was saved\. The last good checkpoint is {last}")
    with pytest.raises(NonFiniteError, match=expected):
        train(cfg)
    assert read_checkpoint(last)["global_step"] == 4  # the first epoch's
    assert len(list(last.parent.glob("epoch*.ckpt"))) == 1 and list(last.parent.glob("epoch000-*.ckpt"))


def _comparable(metrics: dict) -> dict:
    paths = ("best_checkpoint", "last_checkpoint", "output_dir")
    return {key: value for key, value in metrics.items() if key not in paths}


def test_same_seed_gives_the_same_metrics_on_cpu(tmp_path):
    fewer = ("data.num_train=16", "data.num_val=8")
    first = _comparable(train(compose_train(*fewer, output_dir=tmp_path / "a")))
    again = _comparable(train(compose_train(*fewer, output_dir=tmp_path / "b")))
    other_seed = _comparable(train(compose_train(*fewer, "seed=7", output_dir=tmp_path / "c")))
    assert first == again
    assert first["val/loss"] != other_seed["val/loss"] and first["val/iou_per_class"] != other_seed["val/iou_per_class"]
