"""Bad files met during a run: inside DataLoader workers they surface as their own error (never a hang), and
with data.on_bad_sample=skip they are counted in metrics.json and the run summary. Decompression bombs, folders
and symbolic link loops named like images are bad files that say what they are."""

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra.utils import instantiate

from segkit.data import InvalidFileError, MissingFileError, PetsDataset, SegmentationFiles, VOCDataModule
from segkit.tasks.train import train
from tests.conftest import write_decompression_bomb, write_pets, write_voc

PETS_SPLITS = {"trainval": [f"cat_{i}" for i in range(12)], "test": [f"dog_{i}" for i in range(6)]}


@contextmanager
def fails_within(seconds: int):
    """Turns a hang into a test failure."""

    def hung(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def pets_root(tmp_path: Path) -> Path:
    write_pets(tmp_path, PETS_SPLITS)
    return tmp_path


def pets_file(root: Path, sample_id: str, kind: str = "image") -> Path:
    base = root / "oxford-iiit-pet"
    if kind == "image":
        return base / "images" / f"{sample_id}.jpg"
    return base / "annotations" / "trimaps" / f"{sample_id}.png"


def test_jpeg_cut_mid_scan_and_png_that_is_no_image_name_the_file(pets_root):
    image = pets_file(pets_root, "cat_0")
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # header whole, pixels cut
    with pytest.raises(InvalidFileError, match=rf"{image}: cannot decode the image \(image file is truncated"):
        PetsDataset(pets_root, "trainval")[0]
    mask = pets_file(pets_root, "cat_1", "mask")
    mask.write_text("<html>not found</html>")
    with pytest.raises(InvalidFileError, match=rf"{mask}: cannot decode the mask \(cannot identify image file"):
        PetsDataset(pets_root, "trainval")[1]


def test_decompression_bomb_names_the_file_and_is_skipped_with_skip(pets_root):
    image = pets_file(pets_root, "cat_0")
    write_decompression_bomb(image)
    expected = (rf"{image}: the image is too large to decode safely \(Image size \(400000000 pixels\) exceeds limit "
                r".*raise PIL.Image.MAX_IMAGE_PIXELS")
    with pytest.raises(InvalidFileError, match=expected):
        PetsDataset(pets_root, "trainval")[0]
    skipping = PetsDataset(pets_root, "trainval", on_bad_sample="skip")
    image_array, _ = skipping[0]  # the next good sample in its place
    assert skipping.num_skipped == 1 and skipping.skipped_ids == ["cat_0"] and image_array.ndim == 3


def test_folder_and_symlink_loop_named_like_an_image_say_what_they_are(pets_root):
    folder = pets_file(pets_root, "cat_0")
    folder.unlink()
    folder.mkdir()
    with pytest.raises(InvalidFileError, match=rf"{folder}: image is a folder, expected a file"):
        PetsDataset(pets_root, "trainval")[0]
    loop = pets_file(pets_root, "cat_1")
    loop.unlink()
    loop.symlink_to(loop.with_name("other.jpg"))
    loop.with_name("other.jpg").symlink_to(loop)
    with pytest.raises(InvalidFileError, match=rf"{loop}: image is a loop of symbolic links, expected a file"):
        PetsDataset(pets_root, "trainval")[1]
    dangling = pets_file(pets_root, "cat_2")
    dangling.unlink()
    dangling.symlink_to(pets_root / "gone.jpg")
    with pytest.raises(MissingFileError, match=rf"{dangling}: image is a symbolic link to {pets_root}/gone.jpg, "
                                               r"which does not exist"):
        PetsDataset(pets_root, "trainval")[2]


def test_bad_file_read_in_a_loader_worker_raises_its_error_naming_it(tmp_path):
    write_voc(tmp_path, {"train": ["a", "b", "c", "d"], "val": ["e"]})
    broken = tmp_path / "VOCdevkit/VOC2012/JPEGImages/c.jpg"
    broken.write_bytes(b"")
    datamodule = VOCDataModule(root=tmp_path, num_classes=21, num_workers=2, batch_size=1)
    datamodule.setup("fit")
    with fails_within(60), pytest.raises(InvalidFileError, match=rf"{broken}: image is an empty file \(0 bytes\)"):
        list(datamodule.train_dataloader())


def test_killed_loader_worker_raises_instead_of_hanging(tmp_path, monkeypatch):
    write_voc(tmp_path, {"train": ["a", "b", "c", "d"], "val": ["e"]})
    load = SegmentationFiles.load

    def killed_by_the_oom_killer(reader, index):
        if index == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # forked workers inherit this patch
        return load(reader, index)

    monkeypatch.setattr(SegmentationFiles, "load", killed_by_the_oom_killer)
    datamodule = VOCDataModule(root=tmp_path, num_classes=21, num_workers=2, batch_size=1)
    datamodule.setup("fit")
    started = time.monotonic()
    with fails_within(60), pytest.raises(RuntimeError, match=r"DataLoader worker \(pid\(s\) \d+\) exited unexpectedly"):
        list(datamodule.train_dataloader())
    assert time.monotonic() - started < 30


def test_run_stops_on_a_bad_file_in_a_worker_naming_it(pets_root, make_config):
    mask = pets_file(pets_root, "cat_3", "mask")
    mask.write_bytes(b"")
    # Batches of 4 read all 12 training files; batches of 8 would drop 4 of them.
    cfg = make_config("data=pets", f"data.root={pets_root}", "data.num_workers=2", "data.batch_size=4")
    with fails_within(120), pytest.raises(InvalidFileError, match=rf"{mask}: mask is an empty file \(0 bytes\)"):
        train(cfg)


def test_skipped_samples_are_counted_in_metrics_json_and_the_summary(pets_root, make_config, capsys):
    pets_file(pets_root, "cat_3").write_bytes(b"\xff\xd8 truncated")
    pets_file(pets_root, "dog_1", "mask").write_bytes(b"")
    cfg = make_config("data=pets", f"data.root={pets_root}", "data.num_workers=2", "data.batch_size=4",
                      "data.on_bad_sample=skip")
    with fails_within(120):
        metrics = train(cfg)
    assert metrics["skipped_samples"] == {"train": 1, "val": 1}
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["skipped_samples"] == {
        "train": 1, "val": 1}
    assert "skipped 2 bad samples {'train': 1, 'val': 1}: see the warnings in the log" in capsys.readouterr().out


def test_datasets_without_files_skip_nothing(make_config):
    assert instantiate(make_config().data).skipped == {}
