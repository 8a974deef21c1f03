import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

import segkit.eval
from segkit.checkpoints import CheckpointError, read_training_config
from segkit.config import CONFIG_DIR
from segkit.data import InvalidFileError, MissingFileError, ShapesDataModule
from segkit.data.io import read_mask_png
from segkit.data.palettes import TRIMAP_COLORMAP
from segkit.engine.loading import load_module
from segkit.engine.predictor import Predictor, window_starts
from segkit.runtime.__main__ import main as runtime_main
from segkit.runtime.files import list_images
from segkit.runtime.images import read_image
from segkit.runtime.session import OnnxSegmenter
from segkit.runtime.tta import build_tta
from segkit.tasks.evaluate import check_overrides, evaluate
from segkit.tasks.export import export
from segkit.tasks.predict import predict
from segkit.tasks.train import train
from tests.conftest import (
    REPO,
    compose_eval,
    compose_predict,
    compose_train,
    require_shared_pets,
    write_decompression_bomb,
    write_pets,
)

SHAPES_STD = (0.25, 0.25, 0.25)  # conf/data/shapes.yaml
WINDOW = (32, 32)  # TINY's data.image_size: the training size every predictor below defaults to


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[DictConfig, dict]:
    """One TINY training run (dsc_segnet on shapes, 32x32) shared by the tests: its config and metrics."""
    cfg = compose_train(output_dir=tmp_path_factory.mktemp("train") / "run")
    return cfg, train(cfg)


@pytest.fixture
def best(trained) -> Path:
    return Path(trained[1]["best_checkpoint"])


def random_image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


# Checkpoints carry their training config


def test_checkpoints_carry_the_resolved_training_config_as_plain_data(trained, best):
    cfg, metrics = trained
    expected = OmegaConf.to_container(cfg, resolve=True)
    for path in (best, Path(metrics["last_checkpoint"])):
        assert torch.load(path, map_location="cpu", weights_only=True)["segkit_config"] == expected
    assert read_training_config(best) == expected
    assert load_module(best).segkit_config == expected


def test_a_checkpoint_without_training_config_is_refused_by_name(best, tmp_path):
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    del checkpoint["segkit_config"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(ValueError, match=f"{old}: the checkpoint carries no training config"):
        read_training_config(old)
    with pytest.raises(ValueError, match="carries no training config"):
        load_module(old)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'missing.ckpt'}: checkpoint not found"):
        load_module(tmp_path / "missing.ckpt")


# segkit.eval


def test_eval_reproduces_the_val_metrics_training_reported(trained, best, tmp_path):
    _, reported = trained
    metrics = evaluate(compose_eval(best, "show=2", output_dir=tmp_path / "eval"))

    assert metrics["val/miou"] == pytest.approx(reported["val/miou"], abs=1e-6)
    # The figures beside metrics.json (segkit.engine.figures): the gallery has 2 rows of image | truth | prediction.
    for name in ("confusion_matrix", "iou_per_class", "gallery"):
        with Image.open(tmp_path / "eval" / f"{name}.png") as figure:
            assert figure.format == "PNG" and figure.width > 300, name
    with Image.open(tmp_path / "eval" / "gallery.png") as gallery:
        assert gallery.height > gallery.width * 2 / 3 * 0.8  # two rows of three square panels, and the legend
    assert metrics["val/acc"] == pytest.approx(reported["val/acc"], abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(reported["val/loss"], abs=1e-5)
    assert metrics["val/iou_per_class"] == pytest.approx(reported["val/iou_per_class"], abs=1e-6)
    assert metrics["split"] == "val" and metrics["samples"] == 16  # TINY's num_val
    assert metrics["checkpoint"] == str(best) and metrics["data"] == "ShapesDataModule"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics


# Where segkit's own targets lived before segkit/ became a top level of commands over packages: a checkpoint written
# then names them in its stored config.
TARGETS_BEFORE_THE_MOVE = {"segkit.engine.loggers.": "segkit.loggers.", "segkit.engine.schedules.": "segkit.schedules.",
                           "segkit.engine.distributed.": "segkit.distributed."}


def test_a_checkpoint_written_before_the_move_still_evaluates_predicts_and_exports(trained, best, tmp_path):
    checkpoint = torch.load(best, weights_only=True)
    stored = json.dumps(checkpoint["segkit_config"])
    for new, old in TARGETS_BEFORE_THE_MOVE.items():
        stored = stored.replace(new, old)
    assert "segkit.loggers.ResumableCSVLogger" in stored  # the default logger's target, as earlier versions wrote it
    checkpoint["segkit_config"] = json.loads(stored)
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    metrics = evaluate(compose_eval(old, output_dir=tmp_path / "eval"))
    assert metrics["val/miou"] == pytest.approx(trained[1]["val/miou"], abs=1e-6)
    image = random_image(40, 56)
    assert np.array_equal(Predictor.from_checkpoint(old)(image), Predictor.from_checkpoint(best)(image))
    report = export(old, tmp_path / "old.onnx", exporter="torchscript")
    assert report["max_abs_difference"] < 1e-4


def test_eval_data_split_train_evaluates_the_training_samples(best, tmp_path):
    metrics = evaluate(compose_eval(best, "data.split=train", "data.num_train=8", output_dir=tmp_path))
    assert metrics["split"] == "train" and metrics["samples"] == 8
    assert set(metrics) >= {"train/miou", "train/acc", "train/loss", "train/iou_per_class"}
    assert not any(key.startswith(("val/", "test/")) for key in metrics)
    assert metrics["train/miou"] == pytest.approx(np.mean(list(metrics["train/iou_per_class"].values())))


def miou_by_hand(checkpoint: Path, probabilities: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                 tmp_path: Path) -> float:
    """The mIoU of `probabilities(module, images)` over the checkpoint's validation split, computed here with
    BatchNorm folded, as segkit.eval runs the network."""
    module = load_module(checkpoint).fold_batchnorm()
    datamodule = instantiate(compose_eval(checkpoint, output_dir=tmp_path / "by_hand").data)
    datamodule.use_normalisation_of(module.net)
    datamodule.setup("test")
    confmat = torch.zeros(3, 3, dtype=torch.long)
    with torch.no_grad():
        for images, masks in datamodule.test_dataloader():
            predictions = probabilities(module, images).argmax(dim=1)
            labelled = masks != 255
            confmat += torch.bincount(masks[labelled] * 3 + predictions[labelled], minlength=9).reshape(3, 3)
    return (confmat.diag() / (confmat.sum(0) + confmat.sum(1) - confmat.diag())).mean().item()


def test_eval_tta_flip_scores_the_mean_of_each_image_and_its_mirror(best, tmp_path):
    metrics = evaluate(compose_eval(best, "tta=flip", output_dir=tmp_path / "tta"))

    def flip_averaged(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return (module(images).softmax(dim=1) + module(images.flip(-1)).flip(-1).softmax(dim=1)) / 2

    assert metrics["tta"] == "flip"
    assert metrics["val/miou"] == pytest.approx(miou_by_hand(best, flip_averaged, tmp_path), abs=1e-6)
    with pytest.raises(ValueError, match=r"tta='rotate' is not a test-time augmentation; expected one of \[None, 'flip'\]"):
        evaluate(compose_eval(best, "tta=rotate", output_dir=tmp_path / "bad"))


def test_eval_tta_scales_averages_the_softmax_at_each_scale_resized_back(best, tmp_path):
    metrics = evaluate(compose_eval(best, "tta_scales=[0.5,1.0]", "show=2", output_dir=tmp_path / "tta"))

    def scale_averaged(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2:] == WINDOW  # so scale 0.5 feeds the network 16x16
        half = module(F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False))
        half = F.interpolate(half, size=WINDOW, mode="bilinear", align_corners=False).softmax(dim=1)
        return (module(images).softmax(dim=1) + half) / 2

    miou = miou_by_hand(best, scale_averaged, tmp_path)
    assert metrics["tta"] is None and metrics["tta_scales"] == [0.5, 1.0]
    assert metrics["val/miou"] == pytest.approx(miou, abs=1e-6)
    assert (tmp_path / "tta" / "gallery.png").is_file()  # drawn from the same averaged predictions
    for bad, expected in [("[0.5,-1]", r"tta_scales=\[0.5, -1\]: expected a list of distinct positive scale factors"),
                          ("[1,1.0]", r"tta_scales=\[1, 1.0\] names a value twice"),
                          ("0.75", r"tta_scales=0.75: expected a list")]:
        with pytest.raises(ValueError, match=expected):
            evaluate(compose_eval(best, f"tta_scales={bad}", output_dir=tmp_path / "bad"))


def test_tta_views_and_the_sizes_the_network_sees_at_each_scale():
    tta = build_tta("flip", [0.75, 1.0, 0.875, 0.001])
    assert tta.views() == [(0.75, False), (0.75, True), (1.0, False), (1.0, True), (0.875, False), (0.875, True),
                           (0.001, False), (0.001, True)]
    assert tta.size((128, 128), 0.75) == (96, 96)
    assert tta.size((128, 128), 0.875) == (112, 112)
    assert tta.size((375, 500), 0.75) == (281, 375)
    assert tta.size((375, 500), 1.0) == (375, 500)
    assert tta.size((128, 128), 0.001) == (1, 1)
    assert tta.overrides() == "tta=flip tta_scales=[0.75,1,0.875,0.001]"
    assert build_tta(None, None) is None and build_tta(None, [1.0]) is None
    assert build_tta("flip", None).overrides() == "tta=flip"


def test_training_with_tta_picks_its_best_checkpoint_plainly_and_reports_it_with_and_without_tta(
    tmp_path, caplog, capsys
):
    cfg = compose_train("tta=flip", "tta_scales=[0.5,1.0]", "trainer.max_epochs=2", output_dir=tmp_path / "run")
    reported = train(cfg)
    summary = capsys.readouterr().out
    best = Path(reported["best_checkpoint"])
    augmented = evaluate(compose_eval(best, "tta=flip", "tta_scales=[0.5,1.0]", output_dir=tmp_path / "tta"))
    with caplog.at_level(logging.WARNING, logger="segkit.tasks.evaluate"):
        plain = evaluate(compose_eval(best, output_dir=tmp_path / "plain"))

    assert reported["tta"] == "flip" and reported["tta_scales"] == [0.5, 1.0]
    assert augmented["val/miou"] == pytest.approx(reported["val/miou"], abs=1e-6)
    assert augmented["val/iou_per_class"] == pytest.approx(reported["val/iou_per_class"], abs=1e-6)
    assert plain["val/miou"] == pytest.approx(reported["without_tta"]["val/miou"], abs=1e-6)
    assert plain["val/iou_per_class"] == pytest.approx(reported["without_tta"]["val/iou_per_class"], abs=1e-6)
    assert plain["val/miou"] != pytest.approx(reported["val/miou"], abs=1e-6)
    # The validations of training scored single views: the best checkpoint's name carries the plain figure.
    assert best.name.endswith(f"miou{plain['val/miou']:.4f}.ckpt")
    assert "add tta=flip tta_scales=[0.5,1] to compare" in caplog.text
    assert re.search(r"val/miou \d\.\d{4} .*\(test-time augmentation: tta=flip tta_scales=\[0.5,1\]\)", summary)
    assert f"without test-time augmentation: val/miou {plain['val/miou']:.4f}" in summary


def test_eval_command_line_writes_metrics_json(trained, best, tmp_path):
    run_dir = tmp_path / "cli-eval"
    result = subprocess.run(
        [sys.executable, "-m", "segkit.eval", f"ckpt_path={best}", "data.split=val", "trainer.accelerator=cpu",
         f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/miou"] == pytest.approx(trained[1]["val/miou"], abs=1e-6)
    assert f"val/miou {metrics['val/miou']:.4f}" in result.stdout
    assert f"metrics: {run_dir / 'metrics.json'}" in result.stdout
    assert (run_dir / ".hydra" / "overrides.yaml").exists() and (run_dir / "eval.log").exists()
    assert f"val/miou {metrics['val/miou']:.4f}" in (run_dir / "eval.log").read_text()  # the printed result, logged
    assert "figures: confusion_matrix.png, iou_per_class.png" in result.stdout


def test_eval_refuses_overrides_of_the_model_naming_the_key(monkeypatch):
    for override, key in (("model=segnet", "'model'"), ("optimizer.lr=0.1", "'optimizer.lr'"),
                          ("trainer.max_epochs=3", "'trainer.max_epochs'")):
        monkeypatch.setattr(sys, "argv", ["segkit.eval", "ckpt_path=run/best.ckpt", override])
        with pytest.raises(SystemExit, match=f"cannot override {key}.*come from the checkpoint"):
            segkit.eval.main()
    allowed = ["ckpt_path=run/best.ckpt", "data=pets", "data.split=test", "+data.num_val=4", "~data.mean",
               "paths.data_dir=/data", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=bf16-mixed",
               "hydra.run.dir=out", "hydra/job_logging=disabled"]
    assert check_overrides(allowed) == ("ckpt_path", "run/best.ckpt")
    assert check_overrides(["onnx_path=m.onnx", "data=pets"]) == ("onnx_path", "m.onnx")
    with pytest.raises(ValueError, match="one of ckpt_path=... .* and onnx_path=... .* is required$"):
        check_overrides(["data.split=val"])
    with pytest.raises(ValueError, match="is required, not both"):
        check_overrides(["ckpt_path=run/best.ckpt", "onnx_path=m.onnx"])
    with pytest.raises(ValueError, match="onnx_path=m.onnx: name the data to evaluate on with data=<dataset>"):
        check_overrides(["onnx_path=m.onnx", "data.root=/data"])


def test_eval_refuses_data_with_another_number_of_classes(best, tmp_path):
    cfg = compose_eval(best, "data=voc", f"data.root={tmp_path}", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"the model predicts 3 classes .* VOCDataModule has 21"):
        evaluate(cfg)


def test_data_split_selects_the_evaluated_split(make_config, tmp_path):
    write_pets(tmp_path, {"trainval": ["Abyssinian_1", "beagle_2", "pug_4"], "test": ["pug_3"]})
    sizes = {}
    for split in ("train", "val", "test"):
        cfg = make_config("data=pets", f"data.root={tmp_path}", f"data.split={split}", "data.val_split=trainval")
        datamodule = instantiate(cfg.data)
        datamodule.setup("test")
        sizes[split] = len(datamodule.test_set)
        images, masks = next(iter(datamodule.test_dataloader()))
        assert images.shape[-2:] == (32, 32) and masks.dtype == torch.int64  # the validation transforms
    assert sizes == {"train": 3, "val": 3, "test": 1}  # val is the val_split list
    with pytest.raises(ValueError, match=r"data.split='test' is not a split of ShapesDataModule; .*\['train', 'val'\]"):
        ShapesDataModule(num_classes=3, split="test")


# segkit.predict


def test_list_images_takes_files_folders_and_lists(tmp_path):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("b.JPG", "a.png", "notes.txt", "sub/c.jpg"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    single = tmp_path / "d.webp"
    single.write_bytes(b"x")
    assert list_images(tmp_path / "photos") == [tmp_path / "photos" / "a.png", tmp_path / "photos" / "b.JPG"]
    assert list_images([str(single), str(tmp_path / "photos")])[0] == single
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="input=.*empty: the folder holds no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="input=.*nowhere.jpg: no such file or folder"):
        list_images(tmp_path / "nowhere.jpg")
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(InvalidFileError, match="loop.jpg: input is a loop of symbolic links, expected a file"):
        list_images(loop)
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "deleted.jpg")
    with pytest.raises(MissingFileError, match="gone.jpg: input is a symbolic link to .*deleted.jpg, which does not"):
        list_images(dangling)


def test_predict_writes_palette_masks_and_overlays_at_each_input_size(best, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(random_image(37, 53, seed=1)).save(photos / "a_rgb.jpg")
    Image.fromarray(random_image(200, 300, seed=2, channels=4)).save(photos / "b_rgba.png")
    Image.fromarray(random_image(45, 61, seed=3)[..., 0]).save(photos / "c_gray.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 30x40 (H x W), shown rotated by 90 degrees: 40x30
    Image.fromarray(random_image(30, 40, seed=4)).save(photos / "d_exif.jpg", exif=exif)

    written = predict(compose_predict(best, f"input={photos}", f"output={tmp_path / 'masks'}", output_dir=tmp_path))

    stems = ["a_rgb", "b_rgba", "c_gray", "d_exif"]
    assert written == [tmp_path / "masks" / f"{stem}{suffix}.png" for stem in stems for suffix in ("", "_overlay")]
    with Image.open(tmp_path / "masks" / "legend.png") as legend:  # the classes of the colours
        assert legend.format == "PNG"
    sizes = {"a_rgb": (37, 53), "b_rgba": (200, 300), "c_gray": (45, 61), "d_exif": (40, 30)}
    for stem, input_path in zip(stems, sorted(photos.iterdir())):
        image = read_image(input_path)
        assert image.shape[:2] == sizes[stem]
        mask_file = Image.open(tmp_path / "masks" / f"{stem}.png")
        assert mask_file.mode == "P"
        assert np.array_equal(np.asarray(mask_file.getpalette(), dtype=np.uint8).reshape(-1, 3)[:3], TRIMAP_COLORMAP)
        mask = read_mask_png(tmp_path / "masks" / f"{stem}.png")
        assert mask.shape == sizes[stem] and set(np.unique(mask)) <= {0, 1, 2}
        overlay = np.asarray(Image.open(tmp_path / "masks" / f"{stem}_overlay.png"))
        expected = (image * 0.5 + TRIMAP_COLORMAP[mask] * 0.5).round()
        assert overlay.shape == (*sizes[stem], 3) and np.abs(overlay - expected).max() <= 1


def test_predict_refuses_unreadable_files_and_clashing_outputs(best, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(InvalidFileError, match=f"{broken}: cannot decode the image"):
        predict(compose_predict(best, f"input={broken}", f"output={tmp_path / 'out'}", output_dir=tmp_path))
    twins = tmp_path / "twins"
    twins.mkdir()
    for name in ("a.jpg", "a.png"):
        Image.fromarray(random_image(20, 20)).save(twins / name)
    with pytest.raises(ValueError, match="a.png would be written for more than one input"):
        predict(compose_predict(best, f"input={twins}", f"output={tmp_path / 'out'}", output_dir=tmp_path))
    with pytest.raises(ValueError, match="would overwrite the input .*a.png"):
        predict(compose_predict(best, f"input={twins / 'a.png'}", f"output={twins}", output_dir=tmp_path))
    # The same file under another name in the output folder: writing the mask would replace the input too.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a.png").hardlink_to(twins / "a.png")
    with pytest.raises(ValueError, match=f"output={linked} would overwrite the input {twins / 'a.png'}"):
        predict(compose_predict(best, f"input={twins / 'a.png'}", f"output={linked}", output_dir=tmp_path))
    assert np.array_equal(read_image(twins / "a.png"), random_image(20, 20))


def test_flip_tta_averages_the_image_and_its_mirror(best):
    plain, tta = Predictor.from_checkpoint(best), Predictor.from_checkpoint(best, tta="flip")
    image = random_image(40, 56, seed=5)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    # The network alone does not commute with flipping, so the checks below have something to catch.
    assert not torch.allclose(plain.probabilities(mirrored), plain.probabilities(image).flip(-1), atol=1e-4)
    expected = (plain.probabilities(image) + plain.probabilities(mirrored).flip(-1)) / 2
    torch.testing.assert_close(tta.probabilities(image), expected)
    torch.testing.assert_close(tta.probabilities(mirrored), tta.probabilities(image).flip(-1))
    assert tta(image).shape == (40, 56)


def test_tta_scales_average_the_predictions_at_each_multiple_of_the_training_size(best):
    image = random_image(40, 56, seed=6)
    # TINY trains at 32x32: scale 1.5 feeds the network 48x48.
    scales = Predictor.from_checkpoint(best, tta="flip", tta_scales=[1.5, 1.0])
    views = [Predictor.from_checkpoint(best, image_size=size, tta="flip") for size in [(48, 48), WINDOW]]
    torch.testing.assert_close(scales.probabilities(image), sum(view.probabilities(image) for view in views) / 2)
    assert not torch.allclose(views[0].probabilities(image), views[1].probabilities(image), atol=1e-3)
    with pytest.raises(ValueError, match=r"tta_scales=\[0.5, 1.0\] with sliding_window=true"):
        Predictor.from_checkpoint(best, tta_scales=[0.5, 1.0], sliding_window=True)


def test_predict_names_a_decompression_bomb(best, tmp_path):
    bomb = tmp_path / "huge.png"
    write_decompression_bomb(bomb)
    with pytest.raises(InvalidFileError, match=f"{bomb}: the image is too large to decode safely"):
        predict(compose_predict(best, f"input={bomb}", f"output={tmp_path / 'out'}", output_dir=tmp_path))


def test_sliding_window_predicts_at_native_scale(best):
    plain = Predictor.from_checkpoint(best)
    sliding = Predictor.from_checkpoint(best, sliding_window=True)
    assert sliding.image_size == WINDOW
    # An image of exactly the window: one window, the same logits as plain inference.
    square = random_image(*WINDOW, seed=6)
    torch.testing.assert_close(sliding.logits(square), plain.logits(square))
    # Two windows side by side without overlap: each half predicted on its own.
    wide = random_image(32, 64, seed=7)
    side_by_side = Predictor.from_checkpoint(best, sliding_window=True, window_overlap=0.0)
    halves = torch.cat([plain.logits(np.ascontiguousarray(wide[:, :32])),
                        plain.logits(np.ascontiguousarray(wide[:, 32:]))], dim=-1)
    torch.testing.assert_close(side_by_side.logits(wide), halves)
    # Larger than the window, overlapping windows; smaller than the window, padded.
    assert window_starts(70, 32, 16) == [0, 16, 32, 38] and window_starts(20, 32, 16) == [0]
    assert sliding(random_image(50, 70, seed=8)).shape == (50, 70)
    assert sliding(random_image(20, 24, seed=9)).shape == (20, 24)
    assert not torch.allclose(sliding.logits(wide), plain.logits(wide))  # native scale, not resized


# ONNX exports: segkit.eval and segkit.predict through onnxruntime

# The data TINY trained and validated on, named as an ONNX evaluation must name it.
TINY_DATA = ["data=shapes", "data.image_size=[32,32]", "data.num_train=32", "data.num_val=16", "data.batch_size=8"]


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory) -> dict[str, Path]:
    """The best checkpoint of `trained` as fp32 and int8 ONNX files (int8 calibrated on 8 training images)."""
    folder = tmp_path_factory.mktemp("onnx")
    best_checkpoint = trained[1]["best_checkpoint"]
    return {precision: Path(export(best_checkpoint, folder / f"best.{precision}.onnx", precision=precision,
                                   calibration_images=8, exporter="torchscript", check=False)["onnx"])
            for precision in ("fp32", "int8")}


def compose_onnx_eval(onnx_path: Path, *overrides: str, output_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"onnx_path={onnx_path}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def test_eval_of_the_onnx_exports_reproduces_the_checkpoints_metrics(trained, exports, tmp_path):
    _, reported = trained
    fp32 = evaluate(compose_onnx_eval(exports["fp32"], *TINY_DATA, output_dir=tmp_path / "fp32"))
    # Logits agree to 1e-4 (test_summary_export); PyTorch's channels_last convolutions and onnxruntime's NCHW ones
    # round differently, so on this barely trained model a few near-tie pixels of the 16,384 flip class.
    assert fp32["val/miou"] == pytest.approx(reported["val/miou"], abs=2e-3)
    assert fp32["val/iou_per_class"] == pytest.approx(reported["val/iou_per_class"], abs=2e-3)
    assert fp32["onnx"] == str(exports["fp32"]) and "checkpoint" not in fp32 and fp32["samples"] == 16
    assert json.loads((tmp_path / "fp32" / "metrics.json").read_text()) == fp32
    int8 = evaluate(compose_onnx_eval(exports["int8"], *TINY_DATA, output_dir=tmp_path / "int8"))
    assert int8["val/miou"] == pytest.approx(fp32["val/miou"], abs=0.02)
    # Test-time augmentation of an export: its views at other sizes, as a checkpoint's.
    tta = ("tta=flip", "tta_scales=[0.5,1.0]")
    exported = evaluate(compose_onnx_eval(exports["fp32"], *TINY_DATA, *tta, output_dir=tmp_path / "tta"))
    checkpoint = evaluate(compose_eval(Path(reported["best_checkpoint"]), *tta, output_dir=tmp_path / "ckpt_tta"))
    assert exported["val/miou"] == pytest.approx(checkpoint["val/miou"], abs=2e-3)
    assert exported["val/miou"] != pytest.approx(fp32["val/miou"], abs=1e-6)
    with pytest.raises(ValueError, match="the model predicts 3 classes .* VOCDataModule has 21"):
        evaluate(compose_onnx_eval(exports["fp32"], "data=voc", f"data.root={tmp_path}", output_dir=tmp_path))


def test_predict_onnx_path_writes_the_masks_of_the_checkpoint(best, exports, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, size in enumerate([(37, 53), (120, 90)]):
        Image.fromarray(random_image(*size, seed=seed)).save(photos / f"p{seed}.png")
    written = predict(compose_predict(exports["fp32"], f"input={photos}", f"output={tmp_path / 'masks'}",
                                      output_dir=tmp_path, key="onnx_path"))
    assert [path.name for path in written] == ["p0.png", "p0_overlay.png", "p1.png", "p1_overlay.png"]
    predictor = Predictor.from_checkpoint(best)
    for name in ("p0", "p1"):
        expected = predictor(read_image(photos / f"{name}.png"))
        # Random pixels are the worst case for a grey level of resizing difference (see the real photo below).
        assert np.mean(read_mask_png(tmp_path / "masks" / f"{name}.png") == expected) > 0.85
    with pytest.raises(ValueError, match="sliding_window=true needs ckpt_path"):
        predict(compose_predict(exports["fp32"], f"input={photos}", "sliding_window=true", output_dir=tmp_path,
                                key="onnx_path"))
    both = compose_predict(best, f"input={photos}", f"onnx_path={exports['fp32']}", output_dir=tmp_path)
    with pytest.raises(ValueError, match="give one of ckpt_path=... .* and onnx_path=..."):
        predict(both)


def test_runtime_tta_scales_average_the_exports_predictions_at_each_size(exports, tmp_path):
    image = random_image(40, 56, seed=7)
    scales = OnnxSegmenter(exports["fp32"], tta="flip", tta_scales=[1.5, 1.0])
    views = [OnnxSegmenter(exports["fp32"], image_size=size, tta="flip") for size in [(48, 48), WINDOW]]
    expected = sum(view.probabilities(image) for view in views) / 2
    np.testing.assert_allclose(scales.probabilities(image), expected, atol=1e-6)
    assert not np.allclose(views[0].probabilities(image), views[1].probabilities(image), atol=1e-3)
    Image.fromarray(image).save(tmp_path / "photo.png")
    runtime_main([str(exports["fp32"]), str(tmp_path / "photo.png"), "--output", str(tmp_path / "masks"),
                  "--tta", "flip", "--tta-scales", "1.5", "1"])  # python -m segkit.runtime
    assert np.array_equal(read_mask_png(tmp_path / "masks" / "photo.png"), scales(image))
    with pytest.raises(ValueError, match=r"tta_scales=\[0\]: expected a list of distinct positive scale factors"):
        OnnxSegmenter(exports["fp32"], tta_scales=[0])


# The modules a deployment without torch lacks: importing any of them makes segkit.runtime fail.
NOT_INSTALLED = ["torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "hydra", "omegaconf",
                 "albumentations", "cv2", "scipy", "onnx", "onnxconverter_common"]
TORCH_FREE_PREDICT = """
import sys
from pathlib import Path

import numpy as np

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {not_installed}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a deployment without torch)")

sys.meta_path.insert(0, NotInstalled())
from segkit.runtime.images import read_image
from segkit.runtime.__main__ import main
from segkit.runtime.session import OnnxSegmenter

segmenter = OnnxSegmenter({onnx_path!r})
image = read_image(Path({photo!r}))
np.save({arrays!r} + "/logits.npy", segmenter.logits(image))
np.save({arrays!r} + "/mask.npy", segmenter(image))
main([{onnx_path!r}, {photo!r}, "--output", {output!r}])  # python -m segkit.runtime
"""


def test_runtime_predicts_a_real_photo_like_the_checkpoint_without_torch(best, exports, tmp_path):
    photo = require_shared_pets() / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg"
    output = tmp_path / "masks"
    script = TORCH_FREE_PREDICT.format(not_installed=NOT_INSTALLED, onnx_path=str(exports["fp32"]), photo=str(photo),
                                       output=str(output), arrays=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    predictor = Predictor.from_checkpoint(best)
    image = read_image(photo)
    # The training pipeline's resize and normalisation, to within one grey level: cv2 resizes uint8
    # images in fixed-point arithmetic, the runtime in floats rounded to levels.
    difference = (OnnxSegmenter(exports["fp32"]).preprocess(image)[0]
                  - predictor.resize_and_normalise[WINDOW](image=image)["image"].numpy())
    levels = difference * 255 * np.array(SHAPES_STD)[:, None, None]
    assert np.abs(levels).max() <= 1 + 1e-4
    # On the same input the exported network computes the checkpoint's logits.
    segmenter = OnnxSegmenter(exports["fp32"])
    inputs = segmenter.preprocess(image)
    (onnx_logits,) = segmenter.session.run(["logits"], {"images": inputs})
    assert np.abs(onnx_logits - predictor._forward(torch.from_numpy(inputs)).numpy()).max() < 1e-3
    # End to end, a grey level of preprocessing moves this out-of-domain shapes model's logits a little, which
    # flips pixels whose classes are near ties.
    logits, expected = np.load(tmp_path / "logits.npy"), predictor.logits(image).numpy()
    assert logits.shape == expected.shape == (3, *image.shape[:2])
    assert np.median(np.abs(logits - expected)) < 0.05
    mask = np.load(tmp_path / "mask.npy")
    top_two = np.sort(expected, axis=0)[-2:]
    clear = top_two[1] - top_two[0] > 0.1  # where the torch prediction is not a near tie
    assert clear.mean() > 0.5 and np.mean(mask[clear] == predictor(image)[clear]) > 0.98
    assert np.array_equal(read_mask_png(output / "Abyssinian_1.png"), mask)
    assert "segkit predict: 1 images" in result.stdout


# The real Pets sample


def test_real_pets_predict_keeps_each_photos_size_and_eval_reads_its_test_list(best, tmp_path):
    root = require_shared_pets()
    images = root / "oxford-iiit-pet" / "images"
    # A GIF, an RGBA PNG and a photo with an invalid EXIF orientation, all named .jpg.
    photos = [images / f"Abyssinian_{n}.jpg" for n in (34, 5, 17)]
    written = predict(compose_predict(best, f"input=[{','.join(map(str, photos))}]", f"output={tmp_path / 'masks'}",
                                      "overlays=false", "tta=flip", output_dir=tmp_path))
    assert len(written) == 3
    for photo, mask_path in zip(photos, written):
        assert read_mask_png(mask_path).shape == read_image(photo).shape[:2]

    # Shapes has Pets' three trimap classes, so data=pets can replace the checkpoint's data.
    cfg = compose_eval(best, "data=pets", f"data.root={root}", "data.split=test", "data.num_val=4",
                       "data.num_workers=0", output_dir=tmp_path / "eval")
    metrics = evaluate(cfg)
    assert metrics["data"] == "PetsDataModule" and metrics["split"] == "test" and metrics["samples"] == 4
    assert 0.0 <= metrics["test/miou"] <= 1.0
    assert set(metrics["test/iou_per_class"]) == {"object", "background", "border"}  # the model's names


def test_training_resize_tells_a_model_trained_on_resized_images_from_one_trained_on_crops():
    from segkit.engine.predictor import training_resize

    resized = {"train_transforms": [{"_target_": "albumentations.Resize", "height": 128, "width": 96},
                                    {"_target_": "albumentations.HorizontalFlip", "p": 0.5}]}
    cropped = {"train_transforms": [{"_target_": "albumentations.RandomScale", "scale_limit": 0.5},
                                    {"_target_": "albumentations.RandomCrop", "height": 512, "width": 512}]}
    assert training_resize(resized) == (128, 96)
    assert training_resize(cropped) is None and training_resize({"train_transforms": []}) is None
