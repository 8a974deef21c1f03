"""The wandb dashboard (`logger=wandb`), read back from the files of offline runs, and the other loggers."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from segkit.callbacks.wandb_dashboard import examples_table
from segkit.config import CONFIG_DIR
from segkit.data.palettes import TRIMAP_COLORMAP, ids_to_colours
from segkit.engine.loggers import RUN_ID_KEY, run_id_in_checkpoint, wandb_logger
from segkit.tasks.train import train
from tests.conftest import REPO, TINY

VAL_PIXELS = 16 * 32 * 32  # TINY: 16 validation images of 32 x 32, none ignored


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch):
    """No account, no network: runs are written to <run dir>/wandb/offline-run-*."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def read_records(run_file: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a `run-<id>.wandb` file: a 7-byte header (":W&B", 0xBEE1, version), then LevelDB's
    log format, 32 KiB blocks of chunks with a 7-byte header (crc32, length, type) each, types 1 (whole
    record) or 2, 3, 4 (first, middle, last piece of one)."""
    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a wandb run file"
    block, header = 32768, 7
    records, pending, offset = [], b"", header
    while len(data) - offset >= header:
        if block - offset % block < header:  # too little room left in a block for a chunk: padding
            offset += block - offset % block
            continue
        length, kind = struct.unpack_from("<HB", data, offset + 4)
        if offset + header + length > len(data):  # a chunk still being written
            break
        pending += data[offset + header : offset + header + length]
        offset += header + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def read_finished_records(run_file: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records of a finished run. `run.finish()` can return while wandb's service process is still
    writing the file (seen under load: the last history row missing), so wait for the exit record,
    which comes last."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(run_file)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"{run_file}: no exit record after {timeout_s} s"
        time.sleep(0.1)


def _items(items) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


class OfflineRun:
    """What an offline wandb run recorded: its run record, config, history rows, final summary, files."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        records = read_finished_records(next(run_dir.glob("run-*.wandb")))
        self.run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        self.history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
        self.config: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        for record in records:
            if record.WhichOneof("record_type") == "config":
                self.config.update(_items(record.config.update))
            if record.WhichOneof("record_type") == "summary":
                self.summary.update(_items(record.summary.update))

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.history if any(k == key or k.startswith(f"{key}/") for k in row)]

    def media(self, row: dict[str, Any], key: str) -> Path:
        return self.dir / "files" / row[f"{key}/path"]


def offline_runs(output_dir: Path) -> list[OfflineRun]:
    return [OfflineRun(path) for path in sorted((output_dir / "wandb").glob("offline-run-*"))]


def test_offline_run_records_metrics_panel_confusion_matrix_iou_table_and_summary(make_config):
    cfg = make_config("logger=wandb", "trainer.max_epochs=2", "callbacks.wandb_dashboard.num_images=3")
    metrics = train(cfg)
    output_dir = Path(cfg.paths.output_dir)
    [run] = offline_runs(output_dir)
    assert run.dir.name.endswith(run.run.run_id)
    assert run.run.run_group == ""  # single runs are not grouped

    # Two validation epochs and no more: the best checkpoint's final validation is no epoch (its numbers go to
    # the summary, below).
    miou_rows = run.rows_with("val/miou")
    assert len(miou_rows) == 2
    best_epoch = next(epoch for epoch, row in enumerate(miou_rows) if row["val/miou"] == pytest.approx(metrics["val/miou"]))

    # The examples: a table of 3 rows, sample | image | truth | prediction, each epoch (its pictures travel in a run
    # artifact; test_examples_table_* checks them).
    example_rows = run.rows_with("val/examples")
    assert len(example_rows) == 2
    tables = [json.loads(run.media(row, "val/examples").read_text()) for row in example_rows]
    assert all(table["columns"] == ["sample", "image", "truth", "prediction"] for table in tables)
    assert all([row[0] for row in table["data"]] == [0, 1, 2] for table in tables)

    # Confusion matrix and IoU table of the best epoch: every validation pixel once, and the
    # IoUs of metrics.json, which the confusion matrix reproduces.
    final = example_rows[best_epoch]
    confusion = json.loads(run.media(final, "val/confusion_matrix_table").read_text())
    assert confusion["columns"] == ["Actual", "Predicted", "nPredictions"]
    names = list(metrics["val/iou_per_class"])
    counts = np.zeros((3, 3))
    for actual, predicted, pixels in confusion["data"]:
        counts[names.index(actual), names.index(predicted)] = pixels
    assert counts.sum() == VAL_PIXELS
    iou_from_counts = counts.diagonal() / (counts.sum(0) + counts.sum(1) - counts.diagonal())
    assert iou_from_counts == pytest.approx(list(metrics["val/iou_per_class"].values()), abs=1e-6)

    chart = run.config["_wandb/visualize/val/confusion_matrix"]["panel_config"]
    assert chart["panelDefId"] == "wandb/confusion_matrix/v1"

    iou_table = json.loads(run.media(final, "val/iou_table").read_text())
    assert iou_table["columns"] == ["class", "iou", "pixels"]
    assert [row[0] for row in iou_table["data"]] == names
    assert [row[1] for row in iou_table["data"]] == pytest.approx(list(metrics["val/iou_per_class"].values()))
    assert [row[2] for row in iou_table["data"]] == counts.sum(1).tolist()

    # The resolved config with size and cost; the run table's numbers (summary) as in metrics.json.
    assert run.config["model"]["name"] == "dsc_segnet" and run.config["data"]["num_val"] == 16
    assert (run.config["params"], run.config["macs"]) == (1_752_356, metrics["macs"])
    assert {key: run.summary[key] for key in ("params", "macs", "best_checkpoint")} == {
        "params": 1_752_356, "macs": metrics["macs"], "best_checkpoint": metrics["best_checkpoint"]}
    assert metrics["macs"] > 0
    assert run.summary["val/miou"] == pytest.approx(metrics["val/miou"])
    assert run.summary["val/iou_border"] == pytest.approx(metrics["val/iou_per_class"]["border"])

    # Every checkpoint names its wandb run, for resuming.
    for checkpoint in (metrics["best_checkpoint"], metrics["last_checkpoint"]):
        assert run_id_in_checkpoint(checkpoint) == run.run.run_id


def test_resumed_training_continues_the_same_wandb_run(make_config, tmp_path):
    first = make_config("logger=wandb", "callbacks.wandb_dashboard.num_images=1")
    train(first)
    [first_run] = offline_runs(Path(first.paths.output_dir))

    resumed = make_config("logger=wandb", "callbacks.wandb_dashboard.num_images=1", "trainer.max_epochs=2",
                          "scheduler.T_max=1", f"ckpt_path={first.paths.output_dir}/checkpoints/last.ckpt")
    with open_dict(resumed):
        resumed.paths.output_dir = str(tmp_path / "resumed")
    metrics = train(resumed)
    [resumed_run] = offline_runs(tmp_path / "resumed")
    assert resumed_run.run.run_id == first_run.run.run_id
    assert resumed_run.dir.name.endswith(first_run.run.run_id)
    # It trained the second epoch only: one validation point, epoch 1 (the best checkpoint's re-validation goes to
    # the run's summary, not to its curves).
    assert [row["epoch"] for row in resumed_run.rows_with("val/miou")] == [1]
    assert metrics["epochs"] == 2


SWEEP = "2026-11-21_12-00-00"


@pytest.mark.parametrize(
    ("mode", "given", "group", "name"),
    [
        ("RUN", {}, "", None),  # no group; the name is wandb's (chosen by its server, so none offline)
        ("MULTIRUN", {}, SWEEP, "logger=wandb,optimizer.lr=0.003"),
        ("MULTIRUN", {"group": "lr-search", "name": "lr-3e-3"}, "lr-search", "lr-3e-3"),
    ],
    ids=["single-run", "multirun", "multirun-given"],
)
def test_wandb_logger_groups_a_multiruns_jobs_by_sweep_and_names_them_by_their_overrides(
    mode, given, group, name, monkeypatch, tmp_path
):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["logger=wandb", "optimizer.lr=0.003"], return_hydra_config=True)
    cfg.hydra.mode = mode
    cfg.hydra.sweep.dir = str(tmp_path / "multiruns" / SWEEP)
    hydra_config = HydraConfig.instance()
    monkeypatch.setattr(hydra_config, "cfg", hydra_config.cfg)  # as it was, after the test
    hydra_config.set_config(cfg)

    run = wandb_logger(project="segkit", save_dir=str(tmp_path), **given).experiment
    try:
        assert (run.group, run.name) == (group, name)
    finally:
        run.finish()


@pytest.mark.slow
def test_multirun_groups_its_runs_by_sweep_and_names_them_by_their_overrides(tmp_path):
    """The same through `python -m segkit.train -m`, with Hydra's own sweep and job overrides."""
    sweep_dir = tmp_path / "sweep-lr"
    # PYTHONPATH: this checkout's segkit, whichever one the virtual environment has installed.
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "segkit.train", "-m", *TINY, "data.num_train=8", "data.num_val=8", "logger=wandb",
         "optimizer.lr=0.001,0.002", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [offline_runs(sweep_dir / job)[0] for job in ("0", "1")]
    assert [run.run.run_group for run in runs] == ["sweep-lr", "sweep-lr"]
    assert runs[0].run.run_id != runs[1].run.run_id
    assert "optimizer.lr=0.001" in runs[0].run.display_name and "optimizer.lr=0.002" in runs[1].run.display_name


def test_tensorboard_logger_records_the_metrics_and_the_dashboard_stays_idle(make_config):
    cfg = make_config("logger=tensorboard", "+callbacks.wandb_dashboard._target_=segkit.callbacks.WandbDashboard")
    metrics = train(cfg)
    output_dir = Path(cfg.paths.output_dir)
    events = EventAccumulator(str(output_dir / "tensorboard"))
    events.Reload()
    assert {"val/miou", "val/iou_border", "train/loss_step"} <= set(events.Tags()["scalars"])
    assert events.Scalars("val/miou")[-1].value == pytest.approx(metrics["val/miou"])
    assert not (output_dir / "wandb").exists()
    assert run_id_in_checkpoint(metrics["last_checkpoint"]) is None


def test_examples_table_shows_each_sample_at_its_own_aspect_ratio_with_named_mask_layers():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 100, 3), dtype=np.uint8)
    truth = rng.integers(0, 3, (40, 100)).astype(np.uint8)
    truth[:4] = 255
    prediction = np.ones((40, 100), dtype=np.uint8)
    small = (rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), np.zeros((20, 30), np.uint8), np.zeros((20, 30), np.uint8))
    datamodule = SimpleNamespace(colormap=TRIMAP_COLORMAP, ignore_index=255)
    table = examples_table(([image, small[0]], [truth, small[1]], [prediction, small[2]]), datamodule,
                           ["pet", "background", "border"], longest_side=50)
    assert table.columns == ["sample", "image", "truth", "prediction"]
    (index, shown, truth_shown, prediction_shown), (_, small_shown, *_) = table.data
    assert index == 0
    # Scaled down to 50 pixels on the long side, aspect kept; a smaller picture stays as stored.
    assert shown.image.size == truth_shown.image.size == prediction_shown.image.size == (50, 20)
    assert np.array_equal(np.asarray(small_shown.image), small[0])
    truth_half = np.asarray(Image.fromarray(truth).resize((50, 20), Image.Resampling.NEAREST))
    assert set(np.unique(truth_half)) == {0, 1, 2, 255}  # nearest: class ids survive, none blended
    assert np.array_equal(np.asarray(truth_shown.image), ids_to_colours(truth_half, TRIMAP_COLORMAP))
    background = TRIMAP_COLORMAP[1]
    assert (np.asarray(prediction_shown.image) == background).all()
    # wandb's mask layers (no public reader): the ids, with every class and the ignored label named.
    layers = shown._masks
    assert set(layers) == {"ground_truth", "prediction"}
    assert np.array_equal(layers["ground_truth"]._val["mask_data"], truth_half)
    assert layers["prediction"]._val["class_labels"] == {0: "pet", 1: "background", 2: "border", 255: "ignored"}


def test_class_ids_outside_the_colormap_are_an_error():
    with pytest.raises(ValueError, match=r"class ids must lie in 0\.\.2 or be 255 \(ignored\), got \[3, 7\]"):
        ids_to_colours(np.array([[0, 3], [7, 255]]), TRIMAP_COLORMAP)


def test_run_id_of_a_checkpoint(tmp_path):
    torch.save({"state_dict": {}, RUN_ID_KEY: "abc123"}, tmp_path / "wandb.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    assert run_id_in_checkpoint(tmp_path / "wandb.ckpt") == "abc123"
    assert run_id_in_checkpoint(tmp_path / "plain.ckpt") is None
    assert run_id_in_checkpoint("last") is None  # Lightning's name for a run's latest checkpoint
