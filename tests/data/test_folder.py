"""data=folder on the real Pets sample converted to each layout it reads (tests/folder_layouts.py): the
same pixels as data=pets on the same files, a short training run, predictions in the folder's colours,
and a named error for each bad input."""

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.checkpoints import read_training_config
from segkit.config.validate import validate
from segkit.data import FolderDataModule, InvalidFileError, MissingFileError, PetsDataModule
from segkit.data.check import check_dataset
from segkit.data.palettes import TRIMAP_COLORMAP, VOC_COLORMAP
from segkit.tasks.predict import predict
from segkit.tasks.train import train
from segkit.utilities.checks import ConfigError
from tests.conftest import DDP, REPO, compose_predict, require_shared_pets, run_train
from tests.data.conftest import LAYOUTS, convert_pets

NUM_TRAIN, NUM_VAL = 12, 6  # the first ids of Pets' trainval and test lists
BORDER = [224, 224, 192]  # the rgb layout draws the Pets border in VOC's border colour


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    shared, base = require_shared_pets(), tmp_path_factory.mktemp("layouts")
    for layout in LAYOUTS:
        convert_pets(shared, base / layout, layout, NUM_TRAIN, NUM_VAL)
    return {layout: base / layout for layout in LAYOUTS}


@pytest.fixture
def small(tmp_path) -> callable:
    """A layout of 3 train and 2 val Pets samples in tmp_path, to damage."""

    def _convert(layout: str) -> Path:
        convert_pets(require_shared_pets(), tmp_path / layout, layout, 3, 2)
        return tmp_path / layout

    return _convert


@functools.cache
def pets_report(mode: str = "trimap") -> dict:
    pets = PetsDataModule(root=require_shared_pets(), mode=mode, num_classes=3 if mode == "trimap" else 2,
                          num_train=NUM_TRAIN, num_val=NUM_VAL)
    return check_dataset(pets)


# Each layout reads the pixels data=pets reads


@pytest.mark.parametrize("layout", ["lists", "mmseg"])
def test_class_id_layouts_report_exactly_the_pixels_of_data_pets(layouts, layout):
    folder = FolderDataModule(root=layouts[layout], num_classes=3)
    assert folder.class_names == ("pet", "background", "border")  # from classes.txt
    report = check_dataset(folder)
    assert report == pets_report()
    assert (report["train"]["samples"], report["val"]["samples"]) == (NUM_TRAIN, NUM_VAL)


def test_rgb_masks_through_the_labelmap_with_an_ignored_colour_report_the_pixels_of_pets_binary(layouts):
    folder = FolderDataModule(root=layouts["rgb"], num_classes=2, ignore_colors=[BORDER])
    assert folder.class_names == ("pet", "background")
    assert folder.colormap.tolist() == TRIMAP_COLORMAP[:2].tolist()  # the labelmap's colours
    report = check_dataset(folder)
    assert report == pets_report("binary")
    assert report["val"]["ignored_pixels"] == pets_report()["val"]["pixels"]["border"] > 0


def test_flat_folder_is_split_with_its_seed_saved_and_reusable_and_its_classes_counted(layouts, tmp_path):
    saved = tmp_path / "run" / "splits"
    folder = FolderDataModule(root=layouts["flat"], num_classes=3, save_split_to=saved)
    assert folder.class_names == ("class_0", "class_1", "class_2")  # the ids found in the masks
    report = check_dataset(folder)
    assert (report["train"]["samples"], report["val"]["samples"]) == (14, 4)  # 20% of 18, rounded
    pets = pets_report()
    for name, pets_name in zip(folder.class_names, pets["train"]["pixels"]):
        assert report["train"]["pixels"][name] + report["val"]["pixels"][name] == (
            pets["train"]["pixels"][pets_name] + pets["val"]["pixels"][pets_name])
    ids = {split: [s.sample_id for s in folder.readers[split].samples] for split in ("train", "val")}
    assert {split: (saved / f"{split}.txt").read_text().split() for split in ids} == ids
    assert not set(ids["train"]) & set(ids["val"])

    reused = FolderDataModule(root=layouts["flat"], num_classes=3, splits_dir=saved)
    assert [s.sample_id for s in reused.build_split("val").samples] == ids["val"]
    other_seed = FolderDataModule(root=layouts["flat"], num_classes=3, seed=1, save_split_to=saved)
    with pytest.raises(InvalidFileError, match=rf"{saved}/train.txt: holds another train split .*data.splits_dir="):
        other_seed.build_split("train")


def test_config_derives_the_number_of_classes_for_data_and_model(layouts, make_config):
    cfg = make_config("data=folder", f"data.root={layouts['rgb']}", f"data.ignore_colors=[{BORDER}]")
    assert cfg.data.num_classes == cfg.model.num_classes == 2
    validate(cfg)
    assert make_config("data=folder", f"data.root={layouts['flat']}").model.num_classes == 3
    bad = make_config("data=folder", f"data.root={layouts['lists']}", "data.num_classes=4")
    with pytest.raises(ConfigError, match=r"data.num_classes=4: FolderDataModule has 3 classes \['pet', 'background'"):
        validate(bad)


def test_summary_command_resolves_the_folder_classes_without_importing_the_data_package(layouts, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "segkit.summary", "data=folder", f"data.root={layouts['lists']}",
         "data.image_size=[64,64]", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "output [1, 3, 64, 64]" in result.stdout


def test_short_training_run_then_predictions_in_the_folders_colours_without_the_folder(small, make_config, tmp_path):
    root = small("rgb")
    cfg = make_config("data=folder", f"data.root={root}", f"data.ignore_colors=[{BORDER}]", "data.num_workers=0",
                      "data.batch_size=3")
    metrics = train(cfg)
    assert set(metrics["val/iou_per_class"]) == {"pet", "background"}
    assert 0.0 <= metrics["val/miou"] <= 1.0
    stored = read_training_config(metrics["best_checkpoint"])["data"]
    assert stored["classes"] == ["pet", "background"]
    assert stored["palette"] == TRIMAP_COLORMAP[:2].tolist()

    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((root / "images").iterdir())[:2]:
        (photos / image.name).symlink_to(image.resolve())
    root.rename(tmp_path / "moved")  # the checkpoint alone holds the classes and colours
    output = tmp_path / "masks"
    predict(compose_predict(Path(metrics["best_checkpoint"]), f"input={photos}", f"output={output}",
                            output_dir=tmp_path / "predict"))
    mask = Image.open(output / f"{sorted(photos.iterdir())[0].stem}.png")
    assert mask.mode == "P" and mask.getpalette()[:6] == TRIMAP_COLORMAP[:2].ravel().tolist()
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1}


def test_class_id_masks_without_colours_are_drawn_in_the_voc_colours(layouts):
    folder = FolderDataModule(root=layouts["lists"], num_classes=3)
    assert folder.config_found_in_data() == {"classes": ["pet", "background", "border"], "palette": None}
    assert np.array_equal(folder.colormap, VOC_COLORMAP)


# Bad inputs: each its named error


def first_train_mask(root: Path) -> Path:
    return root / "masks" / f"{(root / 'splits' / 'train.txt').read_text().split()[0]}.png"


def test_colour_in_no_class_names_file_colour_pixel_count_and_known_colours(small):
    root = small("rgb")
    mask_path = first_train_mask(root)
    colours = np.array(Image.open(mask_path))
    colours[:2, :3] = (1, 2, 3)
    Image.fromarray(colours).save(mask_path)
    reader = FolderDataModule(root=root, num_classes=2, ignore_colors=[BORDER]).build_split("train")
    expected = (rf"{mask_path}: colours \(1, 2, 3\) \(6 pixels\) are not in the palette of 3 class colours; known "
                r"colours \(-> id\): \(255, 128, 0\) -> 0, \(0, 0, 0\) -> 1, \(224, 224, 192\) -> 255")
    with pytest.raises(InvalidFileError, match=expected):
        reader.load(0)


def test_skip_counts_the_bad_sample_and_reads_the_others(small):
    root = small("rgb")
    colours = np.array(Image.open(first_train_mask(root)))
    colours[0, 0] = (1, 2, 3)
    Image.fromarray(colours).save(first_train_mask(root))
    folder = FolderDataModule(root=root, num_classes=2, ignore_colors=[BORDER], on_bad_sample="skip")
    reader = folder.build_split("train")
    assert [reader[i][1].shape == reader.load(i)[1].shape for i in (1, 2)] == [True, True]
    reader[0]
    assert folder.skipped == {"train": 1} and reader.skipped_ids == [reader.samples[0].sample_id]


def test_missing_mask_names_the_expected_file(small):
    root = small("lists")
    mask_path = first_train_mask(root)
    mask_path.unlink()
    reader = FolderDataModule(root=root, num_classes=3).build_split("train")
    with pytest.raises(MissingFileError, match=rf"{mask_path}: mask not found"):
        reader.load(0)


def test_masks_whose_stems_match_no_image_are_listed(small):
    root = small("flat")
    mask = sorted((root / "masks").iterdir())[0]
    mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
    folder = FolderDataModule(root=root, num_classes=3)
    with pytest.raises(InvalidFileError, match=rf"1 masks have no image of the same id in {root}/images, e.g. "
                                               rf"\['{mask.stem}_mask'\] \(images without a mask: \['{mask.stem}'\]\)"):
        folder.build_split("train")


def test_bad_labelmap_line_names_file_line_and_format(small):
    root = small("rgb")
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\npet:255,128,0::\nbackground;0,0,0\n")
    expected = rf"{root}/labelmap.txt, line 3: 'background;0,0,0'; expected name:r,g,b::"
    with pytest.raises(InvalidFileError, match=expected):
        FolderDataModule(root=root, num_classes=2)


@pytest.mark.parametrize(("labelmap", "expected"), [
    ("pet:255,128,0::\nbackground:0,0,0::\ndog:255,128,0::\n", r"colours \[\(255, 128, 0\)\] appear more than once"),
    ("pet:255,128,0::\npet:0,0,0::\n", r"class names \['pet'\] appear more than once"),
    ("pet:255,128,300::\n", r"line 1: 'pet:255,128,300::'"),
])
def test_labelmap_with_repeated_or_impossible_colours_or_names_is_refused(small, labelmap, expected):
    root = small("rgb")
    (root / "labelmap.txt").write_text(labelmap)
    with pytest.raises(InvalidFileError, match=expected):
        FolderDataModule(root=root, num_classes=2)


def test_split_list_id_without_an_image_is_named(small):
    root = small("lists")
    with (root / "splits" / "val.txt").open("a") as lines:
        lines.write("no_such_cat\n")
    with pytest.raises(MissingFileError, match=rf"{root}/splits/val.txt: 1 ids have no image .*\['no_such_cat'\]"):
        FolderDataModule(root=root, num_classes=3).build_split("val")


def test_two_images_with_one_id_are_named(small):
    root = small("flat")
    image = sorted((root / "images").iterdir())[0]
    (root / "images" / f"{image.stem}.png").symlink_to(image.resolve())
    with pytest.raises(InvalidFileError, match=rf"two images with the id '{image.stem}'"):
        FolderDataModule(root=root, num_classes=3).build_split("train")


def test_mask_id_outside_the_listed_classes_names_file_and_value(small):
    root = small("lists")
    mask_path = first_train_mask(root)
    ids = np.array(Image.open(mask_path))
    ids[0, 0] = 7
    Image.fromarray(ids).save(mask_path)
    reader = FolderDataModule(root=root, num_classes=3).build_split("train")
    expected = rf"{mask_path}: mask values \[7\] are outside the class ids 0..2 and 255 \(ignored\)"
    with pytest.raises(InvalidFileError, match=expected):
        reader.load(0)


def test_colour_masks_without_class_colours_say_where_colours_come_from(small):
    root = small("rgb")
    (root / "labelmap.txt").unlink()
    with pytest.raises(InvalidFileError, match=r"got mode RGB \(to count the classes; an RGB colour mask is read "
                                               r"through the class colours of labelmap.txt"):
        FolderDataModule(root=root, num_classes=2)


@pytest.mark.parametrize(("options", "expected"), [
    ({"palette": [[0, 0, 0]]}, r"data.palette has 1 colours for the 2 classes \['pet', 'background'\]"),
    ({"palette": [[0, 0], [1, 1, 1]]}, r"data.palette: \[\[0, 0\]\] are not colours"),
    ({"ignore_colors": [[0, 0, 0]]}, r"data.ignore_colors: \[\[0, 0, 0\]\] are class colours \(of class ids \[1\]\)"),
    ({"classes": ["pet", "pet"]}, r"data.classes: class names \['pet'\] appear more than once"),
    ({"palette": [[0, 0, 0], [0, 0, 0]]}, r"data.palette: colours \[\(0, 0, 0\)\] appear more than once"),
    ({"classes": ["pet", "background", "border"]}, r"labelmap.txt has 2 colours for the 3 classes"),
    ({"val_fraction": 1.0}, r"data.val_fraction=1.0: expected a fraction between 0 and 1"),
])
def test_bad_options_name_the_key(small, options, expected):
    with pytest.raises(ValueError, match=expected):
        FolderDataModule(root=small("rgb"), **{"num_classes": 2, **options})


def test_missing_root_and_test_split_of_a_flat_folder_are_named(tmp_path, small):
    with pytest.raises(MissingFileError, match=rf"data.root={tmp_path}/gone: folder not found; expected a folder "
                                               r"holding images/ and masks/"):
        FolderDataModule(root=tmp_path / "gone", num_classes=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingFileError, match=rf"{empty}/images: image folder not found; data=folder reads"):
        FolderDataModule(root=empty, classes=["cat", "dog"], num_classes=2).build_split("train")
    with pytest.raises(MissingFileError, match=r"splits/test.txt: a flat folder has no test split"):
        FolderDataModule(root=small("flat"), num_classes=3).build_split("test")


def test_data_check_reports_a_bad_mask_of_the_folder_by_name(small):
    root = small("lists")
    first_train_mask(root).write_bytes(b"junk")
    report = check_dataset(FolderDataModule(root=root, num_classes=3))
    assert (report["train"]["samples"], report["val"]["samples"]) == (3, 2) and report["val"]["problems"] == []
    assert report["train"]["problems"] == [{"sample": first_train_mask(root).stem,
                                            "problem": f"{first_train_mask(root)}: cannot decode the mask "
                                                       f"(cannot identify image file '{first_train_mask(root)}')"}]


@pytest.mark.slow  # a 2-process DDP run: about a minute
def test_ddp_run_on_a_flat_folder_writes_one_split_that_both_processes_read(small, tmp_path):
    root, run_dir = small("flat"), tmp_path / "run"
    run_train([*DDP, "data=folder", f"data.root={root}", "data.num_workers=0", f"hydra.run.dir={run_dir}"],
              cwd=tmp_path)
    saved = {split: (run_dir / "splits" / f"{split}.txt").read_text().split() for split in ("train", "val")}
    assert (len(saved["train"]), len(saved["val"])) == (4, 1)
    assert sorted(saved["train"] + saved["val"]) == sorted(p.stem for p in (root / "images").iterdir())
    assert sorted(p.name for p in (run_dir / "splits").iterdir()) == ["train.txt", "val.txt"]  # no partial files
    stored = read_training_config(run_dir / "checkpoints" / "last.ckpt")["data"]
    assert stored["classes"] == ["class_0", "class_1", "class_2"] and stored["num_classes"] == 3
