import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from segkit.callbacks import INTERRUPTED_EXIT_CODE
from segkit.data.sampling import ResumableShuffle
from segkit.tasks.train import train
from tests.conftest import REPO, TINY

# 8 batches per epoch, 24 in all: long enough to be killed in the middle of an epoch.
RUN = ["trainer.max_epochs=3", "data.num_train=64", "data.batch_size=8"]


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _weights_and_optimizer(checkpoint_path: Path) -> tuple[dict, dict]:
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    return checkpoint["state_dict"], checkpoint["optimizer_states"][0]["state"]


def test_a_run_killed_by_sigterm_resumes_to_the_weights_of_an_uninterrupted_run(make_config, tmp_path):
    uninterrupted = train(make_config(*RUN))

    killed_dir = tmp_path / "killed"
    last = killed_dir / "checkpoints" / "last.ckpt"
    with (tmp_path / "killed.log").open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "segkit.train", *TINY, *RUN, f"hydra.run.dir={killed_dir}"],
                                   cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # some time after epoch 0's checkpoint: wherever training is
        returncode = process.wait(timeout=300)
    log = (tmp_path / "killed.log").read_text()
    assert returncode == INTERRUPTED_EXIT_CODE, log[-3000:]
    assert f"resume with ckpt_path={last}" in log
    interrupted_at = torch.load(last, weights_only=True)["global_step"]
    assert 8 <= interrupted_at < 24

    cfg = make_config(*RUN, f"ckpt_path={last}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(killed_dir)
    rows_before = _csv_rows(killed_dir)
    resumed = train(cfg)

    # Resumed into its own folder: the CSV log keeps the killed run's rows and goes on after them.
    rows = _csv_rows(killed_dir)
    kept = [{key: row[key] for key in rows_before[0]} for row in rows[: len(rows_before)]]
    assert len(rows_before) >= 8 and kept == rows_before
    assert {row["epoch"] for row in rows[len(rows_before):]} >= {"2"}

    weights, optimizer = _weights_and_optimizer(Path(resumed["last_checkpoint"]))
    expected_weights, expected_optimizer = _weights_and_optimizer(Path(uninterrupted["last_checkpoint"]))
    assert torch.load(resumed["last_checkpoint"], weights_only=True)["global_step"] == 24
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[k], expected_weights[k]) for k in weights)
    assert all(torch.equal(optimizer[i]["exp_avg"], expected_optimizer[i]["exp_avg"]) for i in optimizer)
    assert resumed["val/miou"] == uninterrupted["val/miou"]


@pytest.mark.slow  # long: kept out of make test to hold it under 10 minutes
def test_ctrl_c_stops_after_the_batch_and_saves_last_ckpt(tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen([sys.executable, "-m", "segkit.train", *TINY, *RUN, f"hydra.run.dir={run_dir}"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    saved_at_epoch_end = last.stat().st_mtime_ns
    process.send_signal(signal.SIGINT)
    log, _ = process.communicate(timeout=300)
    assert process.returncode == INTERRUPTED_EXIT_CODE, log[-3000:]
    assert "Ctrl+C: stopping after this batch" in log and f"resume with ckpt_path={last}" in log
    assert last.stat().st_mtime_ns > saved_at_epoch_end  # saved again on the interrupt
    assert torch.load(last, weights_only=True)["global_step"] >= 8
    assert not (run_dir / "metrics.json").exists()


def test_resumable_shuffle_is_a_function_of_seed_and_epoch_and_skips_once():
    sampler = ResumableShuffle(10, seed=42)
    epoch0 = list(sampler)
    assert sorted(index for index, _ in epoch0) == list(range(10))
    assert list(ResumableShuffle(10, seed=42)) == epoch0  # no global RNG involved
    torch.manual_seed(0)
    assert list(ResumableShuffle(10, seed=42)) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(epoch1) != sorted(epoch0)  # new order and new augmentation seeds
    resumed = ResumableShuffle(10, seed=42, epoch=1, skip=6)
    assert list(resumed) == epoch1[6:]
    assert list(resumed) == epoch1  # the skip applies to the interrupted epoch only
    with pytest.raises(ValueError, match="skip must be in"):
        ResumableShuffle(10, seed=42, skip=11)
