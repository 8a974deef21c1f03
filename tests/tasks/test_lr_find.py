import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from segkit.engine.module import SegmentationModule
from segkit.tasks.lr_find import lr_find
from segkit.tasks.train import build, train

FINDER = ["lr_finder.num_training=20", "lr_finder.min_lr=1e-5", "lr_finder.max_lr=0.5", "lr_finder.early_stop_threshold=null",
          "lr_finder.skip_begin=3", "data.num_train=48"]


def test_lr_find_writes_the_plot_and_the_curve_and_leaves_the_model_untouched(make_config):
    cfg = make_config(*FINDER)
    result = lr_find(cfg)
    run_dir = Path(cfg.paths.output_dir)

    written = json.loads((run_dir / "lr_find.json").read_text())
    assert written == result
    assert written["min_lr"] == 1e-5 and written["max_lr"] == 0.5 and written["num_training"] == 20
    lrs = written["lr"]
    assert len(lrs) == len(written["loss"]) == written["steps_run"] and written["steps_run"] == 20
    # Exponential mode: a constant ratio between steps, from min_lr towards max_lr (Lightning records
    # min_lr before its first scheduler step, so the first ratio differs).
    assert lrs[0] == pytest.approx(1e-5)
    ratios = (torch.tensor(lrs[2:]) / torch.tensor(lrs[1:-1])).double()
    assert torch.allclose(ratios, torch.full_like(ratios, (0.5 / 1e-5) ** (1 / 20)), rtol=1e-4)
    assert written["suggested_lr"] in lrs
    # The smoothed curve starts at the mean of the first steps' losses, not at half the first one (Lightning's).
    assert written["smoothed_loss"][0] == pytest.approx(sum(written["loss"][:5]) / 5)
    assert not (run_dir / "csv").exists()  # nothing is trained: no logger, no empty folder
    with Image.open(run_dir / "lr_find.png") as plot:
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 200


def test_lr_finder_restores_the_weights_it_trained(make_config):
    cfg = make_config(*FINDER)
    run = build(cfg)
    before = {k: v.clone() for k, v in run.module.state_dict().items()}
    from segkit.engine.lr_range_test import find_lr

    find_lr(run.trainer, run.module, run.datamodule, cfg.lr_finder, Path(cfg.paths.output_dir))
    after = run.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert run.module.train_metrics["confmat"].confmat.sum() == 0  # the test's batches are not counted


def test_train_with_lr_find_trains_with_the_suggestion(make_config):
    cfg = make_config("lr_find=true", *FINDER)
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    suggested = json.loads((run_dir / "lr_find.json").read_text())["suggested_lr"]
    assert suggested != pytest.approx(1e-3)
    assert f"lr: {suggested}" in (run_dir / "config.yaml").read_text()
    module = SegmentationModule.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert module.hparams.optimizer["lr"] == suggested
    ckpt = torch.load(metrics["last_checkpoint"], weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(suggested)
    assert ckpt["segkit_config"]["optimizer"]["lr"] == suggested  # what a resume compares its config with
