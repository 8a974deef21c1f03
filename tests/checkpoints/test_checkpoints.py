"""Checkpoints: atomic saves (a crash or a full disk mid-save keeps the previous file), loads that never run
code from the file, clear errors for a checkpoint of another model or class count, and hash-checked
downloads of pretrained weights."""

import email.message
import errno
import io
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models import VGG16_BN_Weights

import segkit.eval
from segkit.checkpoints import AtomicCheckpointIO, CheckpointError, check_checkpoint_matches, read_checkpoint
from segkit.config import to_plain
from segkit.engine.module import SegmentationModule
from segkit.engine.predictor import Predictor
from segkit.export import export
from segkit.models.encoders.base import WeightsUnavailableError, pretrained_state_dict
from segkit.tasks.train import train
from segkit.utilities.checks import ConfigError
from tests.conftest import REPO, compose_train

# Taken before the autouse `offline` fixture replaces it, to run torchvision's real download path
# against a fake server.
REAL_DOWNLOAD = torch.hub.download_url_to_file
REAL_SAVE = torch.save


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """The folder of a one-epoch TINY dsc_segnet run on shapes (3 classes)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(compose_train(output_dir=run_dir))
    return run_dir


def checkpoint(epoch: int) -> dict:
    return {"epoch": epoch, "state_dict": {"weight": torch.full((1000,), float(epoch))}}


def half_written(obj, file) -> None:
    """Writes the first half of what torch.save would write."""
    buffer = io.BytesIO()
    REAL_SAVE(obj, buffer)
    file.write(buffer.getvalue()[: buffer.tell() // 2])


# Atomic saves


@pytest.fixture
def saved_checkpoint(tmp_path) -> tuple[Path, bytes]:
    """`last.ckpt` of epoch 0 in tmp_path, saved by AtomicCheckpointIO, and its bytes: what a failed save must keep."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint(0), path)
    return path, path.read_bytes()


def test_save_that_fails_midway_keeps_the_previous_checkpoint(saved_checkpoint, tmp_path, monkeypatch):
    path, before = saved_checkpoint

    def crash_halfway(obj, file):
        half_written(obj, file)
        raise RuntimeError("crashed while saving")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(RuntimeError, match="crashed while saving"):
        AtomicCheckpointIO().save_checkpoint(checkpoint(1), path)
    assert path.read_bytes() == before
    assert read_checkpoint(path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no stray temporary file


KILLED_WHILE_SAVING = """
import io, os, signal, sys, torch
from segkit.checkpoints import AtomicCheckpointIO

real_save = torch.save

def killed_halfway(obj, file):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    file.write(buffer.getvalue()[: buffer.tell() // 2])
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = killed_halfway
AtomicCheckpointIO().save_checkpoint({"epoch": 1, "state_dict": {"weight": torch.ones(1000)}}, sys.argv[1])
"""


def test_process_killed_while_saving_leaves_the_previous_checkpoint_readable(saved_checkpoint, tmp_path):
    path, before = saved_checkpoint
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(path)], cwd=REPO, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert path.read_bytes() == before and read_checkpoint(path)["epoch"] == 0
    # The kill left its half-written temporary file; the next save replaces it and the checkpoint.
    assert (tmp_path / "last.ckpt.tmp").stat().st_size < len(before)
    AtomicCheckpointIO().save_checkpoint(checkpoint(2), path)
    assert read_checkpoint(path)["epoch"] == 2 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_disk_full_names_the_path_and_free_space_and_keeps_the_previous(saved_checkpoint, tmp_path, monkeypatch):
    path, before = saved_checkpoint

    def disk_full(obj, file):
        half_written(obj, file)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    expected = rf"no space left on the device while saving checkpoint {path}: [0-9.]+ MiB free in {tmp_path}\."
    with pytest.raises(OSError, match=expected) as raised:
        AtomicCheckpointIO().save_checkpoint(checkpoint(1), path)
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.fixture
def small_disk(tmp_path) -> Path | None:
    """A 3 MB tmpfs in tmp_path (root can mount one), or None where mounting is not permitted."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True)
    yield folder if mount.returncode == 0 else None
    if mount.returncode == 0:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_under_torchs_zip_writer_is_reported_as_no_space(small_disk, tmp_path):
    """torch's zip writer turns a write that failed with ENOSPC into `RuntimeError: ... unexpected pos`."""
    folder = small_disk or tmp_path
    path = folder / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint(0), path)
    before = path.read_bytes()
    if small_disk is None:
        warnings.warn("mounting a 3 MB tmpfs is not permitted here: the full disk is simulated with /dev/full")
        path.with_name("last.ckpt.tmp").symlink_to("/dev/full")  # every write fails with ENOSPC
    larger_than_the_disk = {"epoch": 1, "state_dict": {"weight": torch.zeros(1_000_000)}}  # 4 MB
    expected = rf"no space left on the device while saving checkpoint {path}: [0-9.]+ MiB free in {folder}\."
    with pytest.raises(OSError, match=expected) as raised:
        AtomicCheckpointIO().save_checkpoint(larger_than_the_disk, path)
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in folder.iterdir()] == ["last.ckpt"]


@pytest.mark.slow  # two training runs, one stopped by a full disk: about a minute
def test_disk_full_during_training_stops_the_run_and_keeps_the_last_checkpoint(make_config, monkeypatch):
    cfg = make_config("trainer.max_epochs=2")
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"

    def disk_full_after_the_first_epoch(obj, file, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch", 0) >= 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        REAL_SAVE(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_after_the_first_epoch)
    with pytest.raises(OSError, match=rf"no space left on the device while saving checkpoint {checkpoints}/\S+\.ckpt"):
        train(cfg)
    last = read_checkpoint(checkpoints / "last.ckpt")
    assert last["epoch"] == 0 and last["global_step"] == 4  # TINY: 32 images in batches of 8
    assert not list(checkpoints.glob("*.tmp"))


# Safe loading


class RunsCode:
    """Unpickles into a call of os.mkdir: what a crafted checkpoint can do under weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, make_config):
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3}, "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=rf"{path}: refusing to load: .* GLOBAL \S*mkdir"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        AtomicCheckpointIO().load_checkpoint(path)  # how the trainer loads ckpt_path
    with pytest.raises(ConfigError, match=rf"ckpt_path={path}: refusing to load"):
        train(make_config(f"ckpt_path={path}"))
    with pytest.raises(CheckpointError, match="refusing to load"):
        SegmentationModule.load_from_checkpoint(path)
    assert not marker.exists()


def broken_file(kind: str, folder: Path) -> Path:
    """A checkpoint file that is empty, cut in half, or random bytes."""
    path = folder / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        with path.open("wb") as file:
            half_written(checkpoint(0), file)
    else:
        path.write_bytes(random.Random(0).randbytes(4096))
    return path


@pytest.mark.parametrize(("kind", "expected"), [
    ("empty", r"an empty file \(0 bytes\), not a checkpoint; was its saving cut off\?"),
    ("truncated", r"not a readable PyTorch checkpoint \(\d+ bytes\), truncated or corrupt \(RuntimeError: "
                  r"PytorchStreamReader failed reading zip archive: failed finding central directory\)"),
    ("random", r"not a PyTorch checkpoint \(4096 bytes that torch.save did not write: Unsupported operand \d+\)"),
])
def test_broken_checkpoint_files_get_one_error_naming_the_file_from_every_command(kind, expected, tmp_path,
                                                                                 make_config, monkeypatch):
    path = broken_file(kind, tmp_path)
    expected = f"{path}: {expected}$"
    errors = []
    for read in (read_checkpoint, SegmentationModule.load_from_checkpoint, Predictor.from_checkpoint,
                 lambda p: export(p, tmp_path / "model.onnx"), AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CheckpointError, match=expected) as error:
            read(path)
        errors.append(str(error.value))
    monkeypatch.setattr(sys, "argv", ["segkit.eval", f"ckpt_path={path}"])
    with pytest.raises(SystemExit, match=f"segkit.eval: {expected}"):
        segkit.eval.main()
    with pytest.raises(ConfigError, match=f"ckpt_path={expected}"):
        train(make_config(f"ckpt_path={path}"))
    assert not any("weights_only" in error or "would run code" in error for error in errors)


def test_checkpoint_of_another_model_fails_naming_both(trained_run, make_config):
    last = trained_run / "checkpoints" / "last.ckpt"
    expected = (rf"ckpt_path={last}: the checkpoint holds dsc_segnet with 3 classes, but the config asks for segnet "
                r"with 3 classes; they differ in model.encoder.conv \(checkpoint 'dsc', config 'standard'\)\. ")
    cfg = make_config("model=segnet", f"ckpt_path={last}")
    with pytest.raises(ConfigError, match=expected):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_checkpoint_of_another_class_count_fails_naming_both(trained_run, make_config):
    last = trained_run / "checkpoints" / "last.ckpt"
    model = to_plain(make_config().model)
    expected = (rf"{last}: the checkpoint holds dsc_segnet with 3 classes, but the config asks for dsc_segnet with 2 "
                r"classes; they differ in data.num_classes \(checkpoint 3, config 2\)\.")
    with pytest.raises(CheckpointError, match=expected):
        check_checkpoint_matches(last, {**model, "num_classes": 2}, num_classes=2)
    assert check_checkpoint_matches(last, model, num_classes=3)["net"]["name"] == "dsc_segnet"


def test_matching_checkpoint_resumes_with_weights_only_loading(trained_run, make_config, monkeypatch):
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    # Training longer is honoured; the cosine schedule's length is the checkpoint's (its state restores it).
    last = trained_run / "checkpoints" / "last.ckpt"
    cfg = make_config("trainer.max_epochs=2", "scheduler.T_max=1", f"ckpt_path={last}")
    metrics = train(cfg)
    assert metrics["epochs"] == 2
    assert loads and all(weights_only is True for weights_only in loads)
    ran = OmegaConf.load(Path(cfg.paths.output_dir) / "config.yaml")
    assert (ran.trainer.max_epochs, ran.scheduler.T_max, ran.optimizer.lr) == (2, 1, 0.001)


def test_resume_refuses_settings_that_the_checkpoint_state_would_override(trained_run, make_config):
    last = trained_run / "checkpoints" / "last.ckpt"
    cfg = make_config("optimizer.lr=0.5", "data.batch_size=4", "trainer.max_epochs=3", f"ckpt_path={last}")
    expected = (rf"ckpt_path={last}: resuming cannot change data.batch_size \(checkpoint 8, config 4\), optimizer.lr "
                r"\(checkpoint 0.001, config 0.5\), scheduler.T_max \(checkpoint 1, config 3\): the run continues with "
                r"the optimizer, scheduler and loss state of the checkpoint and its place in the epoch")
    with pytest.raises(ConfigError, match=expected):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


# Pretrained weights


class FakeDownload(io.BytesIO):
    """What urlopen returns: a readable body with headers."""

    def info(self) -> email.message.Message:
        return email.message.Message()


def test_downloaded_weights_with_a_wrong_hash_are_rejected_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", REAL_DOWNLOAD)
    requested = []
    monkeypatch.setattr(torch.hub, "urlopen", lambda request: requested.append(request.full_url)
                        or FakeDownload(b"not the published weights"))
    weights = VGG16_BN_Weights.IMAGENET1K_V1
    expected = (rf"VGG16_BN_Weights.IMAGENET1K_V1: the file downloaded from {weights.url} is not the published one "
                r"\(invalid hash value \(expected \"6c64b313\", got \"[0-9a-f]+\"\).*was not kept")
    with pytest.raises(WeightsUnavailableError, match=expected):
        pretrained_state_dict(weights)
    assert requested == [weights.url]
    assert not list((tmp_path / "hub" / "checkpoints").iterdir())
