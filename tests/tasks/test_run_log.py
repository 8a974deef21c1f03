"""What a command prints and what its log file keeps (segkit.tasks.run_log, conf/hydra/default.yaml)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torchmetrics

from segkit.callbacks.model_summary import summary_table
from tests.conftest import REPO


def run_command(command: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", f"segkit.{command}", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # a whole command-line run; the fast suite checks the epoch lines and CSV in test_train.py
def test_train_log_holds_each_epoch_the_warnings_and_the_summary_and_curves_end_at_the_last_epoch(tmp_path):
    run_dir = tmp_path / "run"
    result = run_command(
        "train", "data.image_size=[32,32]", "data.num_train=16", "data.num_val=8", "data.batch_size=8",
        "trainer.max_epochs=2", "trainer.accelerator=cpu", "callbacks.rich_progress_bar=null",
        "+trainer.enable_progress_bar=false", "logger=[csv,tensorboard]", "task_name=my_experiment",
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Named after the command, as documented, whatever the task_name.
    assert sorted(path.name for path in run_dir.glob("*.log")) == ["train.log"]
    text = (run_dir / "train.log").read_text()
    epochs = [line.split("] - ", 1)[1] for line in text.splitlines() if "] - epoch " in line]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all("train/loss_epoch" in line and "val/miou" in line for line in epochs)
    assert "smaller than the logging interval" in text  # a Lightning warning
    assert "GPU available" in text  # Lightning's own lines
    assert "segkit: dsc_segnet on ShapesDataModule, 2 epochs" in text  # the closing summary
    # The model summary without metric modules or FLOPs; no tips, no _pytree deprecation on the console.
    console = result.stdout + result.stderr
    assert "criterion" in text and "val_metrics" not in text and "FLOPs" not in console
    for noise in ("Tip:", "LeafSpec", "Trainer already configured"):
        assert noise not in console, noise
    # The best checkpoint's re-validation is not an epoch: two epochs, two validation rows, one event file.
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert sorted({int(row["epoch"]) for row in rows}) == [0, 1]
    assert sum(bool(row["val/miou"]) for row in rows) == 2
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_predict_without_input_names_the_missing_key(tmp_path):
    run_dir = tmp_path / "run"
    result = run_command("predict", "ckpt_path=model.ckpt", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "segkit.predict: error: input=... is required: give it on the command line"
    assert "MissingMandatoryValue" in (run_dir / "predict.log").read_text()


class WithMetrics(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Conv2d(3, 4, 3)
        self.val_metrics = torchmetrics.MetricCollection({"acc": torchmetrics.classification.MulticlassAccuracy(4)})
        self.val_loss = torchmetrics.MeanMetric()


def test_model_summary_lists_layers_without_metric_modules_or_flops():
    table = summary_table(WithMetrics(), max_depth=2)
    names = [line.split()[0] for line in table.splitlines()[1:-1]]
    assert names == ["layer"]
    assert table.splitlines()[-1] == "112 trainable parameters, 0 frozen, 0.0 MB"
    assert "FLOPs" not in table


def test_console_handler_writes_to_the_streams_of_the_moment():
    """Rich's progress bar swaps sys.stdout and sys.stderr to print other lines above itself: records follow the
    swap, warnings to stderr."""
    import contextlib
    import io
    import logging

    from segkit.tasks.run_log import ConsoleHandler

    handler = ConsoleHandler(stream=sys.stdout)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for level, message in ((logging.INFO, "epoch 1/2"), (logging.WARNING, "careful")):
            handler.emit(logging.LogRecord("segkit", level, __file__, 1, message, None, None))
    assert (out.getvalue(), err.getvalue()) == ("epoch 1/2\n", "careful\n")
