import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segkit.data import PetsDataModule, VOCDataModule
from segkit.data.check import check_dataset
from tests.conftest import REPO, require_shared_pets, write_decompression_bomb, write_pets, write_voc


def test_report_counts_samples_and_class_pixels_per_split(tmp_path):
    trimaps = write_pets(tmp_path, {"trainval": ["cat_1", "dog_2", "cat_3"], "test": ["dog_4"]})
    report = check_dataset(PetsDataModule(root=tmp_path, num_classes=3))
    assert report["train"]["samples"] == 3 and report["val"]["samples"] == 1
    stored = np.concatenate([trimaps[i].ravel() for i in ("cat_1", "dog_2", "cat_3")])
    expected = {name: int((stored == value).sum()) for name, value in (("pet", 1), ("background", 2), ("border", 3))}
    assert report["train"]["pixels"] == expected
    assert sum(report["train"]["frequencies"].values()) == pytest.approx(1.0)
    assert report["train"]["problems"] == [] and report["val"]["problems"] == []


def test_report_lists_each_bad_sample_with_its_file_and_counts_ignored_pixels(tmp_path):
    masks = write_voc(tmp_path, {"train": ["a", "b", "c"], "val": ["d"]})
    bad_image = tmp_path / "VOCdevkit/VOC2012/JPEGImages/b.jpg"
    bad_image.write_bytes(b"")
    report = check_dataset(VOCDataModule(root=tmp_path, num_classes=21))
    assert report["train"]["samples"] == 3
    assert report["train"]["problems"] == [{"sample": "b", "problem": f"{bad_image}: image is an empty file (0 bytes)"}]
    assert report["train"]["ignored_pixels"] == int((masks["a"] == 255).sum() + (masks["c"] == 255).sum())
    assert report["train"]["pixels"]["background"] == int((masks["a"] == 0).sum() + (masks["c"] == 0).sum())


def test_report_lists_a_decompression_bomb_and_a_mask_with_no_label_and_goes_on(tmp_path):
    masks = write_voc(tmp_path, {"train": ["a", "b", "c", "d"], "val": ["e"]})
    bomb = tmp_path / "VOCdevkit/VOC2012/JPEGImages/b.jpg"
    write_decompression_bomb(bomb)
    unlabelled = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/c.png"
    Image.fromarray(np.full_like(masks["c"], 255)).save(unlabelled)
    report = check_dataset(VOCDataModule(root=tmp_path, num_classes=21))
    problems = {problem["sample"]: problem["problem"] for problem in report["train"]["problems"]}
    assert sorted(problems) == ["b", "c"]
    assert problems["b"].startswith(f"{bomb}: the image is too large to decode safely")
    assert problems["c"] == (f"{unlabelled}: mask has no labelled pixel (only values [255]), so the sample adds "
                             "nothing to the loss or the metrics")
    # Every other sample is still read and counted: a, d and the ignored pixels of c.
    assert report["train"]["pixels"]["background"] == int((masks["a"] == 0).sum() + (masks["d"] == 0).sum())
    assert report["train"]["ignored_pixels"] == int(sum((masks[i] == 255).sum() for i in "ad") + masks["c"].size)


def test_missing_split_file_is_a_problem_of_its_split(tmp_path):
    write_voc(tmp_path, {"train": ["a"]})
    report = check_dataset(VOCDataModule(root=tmp_path, num_classes=21))
    assert report["train"]["samples"] == 1 and report["train"]["problems"] == []
    assert report["val"]["samples"] == 0
    assert report["val"]["problems"][0]["problem"].endswith("ImageSets/Segmentation/val.txt: split file not found")


def test_real_pets_sample_checks_clean():
    report = check_dataset(PetsDataModule(root=require_shared_pets(), num_classes=3))
    assert (report["train"]["samples"], report["val"]["samples"]) == (200, 198)
    assert report["train"]["problems"] == [] and report["val"]["problems"] == []
    frequencies = report["val"]["frequencies"]
    assert frequencies["background"] > frequencies["pet"] > frequencies["border"] > 0.05


def test_command_prints_the_report_and_exits_1_on_problems(tmp_path):
    write_voc(tmp_path / "data", {"train": ["a", "b"], "val": ["c"]})
    (tmp_path / "data/VOCdevkit/VOC2012/SegmentationClass/b.png").write_bytes(b"junk")
    run_dir = tmp_path / "check"
    result = subprocess.run(
        [sys.executable, "-m", "segkit.data_check", "data=voc", f"data.root={tmp_path / 'data'}",
         "data.num_workers=0", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "train: 2 samples, 1 problems" in result.stdout and "val: 1 samples, 0 problems" in result.stdout
    assert "SegmentationClass/b.png: cannot decode the mask" in result.stdout
    assert json.loads((run_dir / "data_check.json").read_text())["val"]["samples"] == 1


def test_throughput_measures_loader_and_training_images_per_second(make_config):
    from segkit.bench.loader import measure_throughput

    rates = measure_throughput(make_config("data.batch_size=4"), batches=3, warmup=1)
    assert rates["batch_size"] == 4 and rates["num_workers"] == 0
    assert rates["loader_images_per_s"] > 0 and rates["train_images_per_s"] > 0
