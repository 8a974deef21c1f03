import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import onnx
import pytest
import torch
from hydra.utils import instantiate

from segkit.bench.export import measure_precisions
from segkit.checkpoints import CheckpointError
from segkit.config import CONFIG_DIR, to_plain
from segkit.data.palettes import TRIMAP_COLORMAP
from segkit.models import without_pretrained_weights
from segkit.models.summary import summarize
from segkit.runtime.session import inference_session, read_metadata
from segkit.tasks.export import convert_fp16, export, export_onnx, onnx_max_abs_difference
from segkit.tasks.train import build, train
from tests.conftest import compose_train, require_shared_pets

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODELS)
def test_summary_counts_parameters_and_macs(make_config, name):
    net = instantiate(without_pretrained_weights(to_plain(make_config(f"model={name}").model)))
    summary = summarize(net, (64, 96))
    assert summary["params"] == sum(p.numel() for p in net.parameters())
    assert summary["params_encoder"] + summary["params_decoder"] == summary["params"]
    assert summary["output_shape"] == [1, 3, 64, 96]
    # MACs scale with the pixel count.
    assert summarize(net, (128, 192))["macs"] == pytest.approx(4 * summary["macs"], rel=0.02)
    assert net.training  # counting leaves the model's mode alone


def test_summary_macs_match_a_hand_count_for_one_conv():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert summarize(conv, (10, 20))["macs"] == 3 * 8 * 9 * 10 * 20


def test_summary_command_writes_summary_json(tmp_path):
    run_dir = tmp_path / "summary"
    result = subprocess.run(
        [sys.executable, "-m", "segkit.summary", "model=segnet_mobilenetv2", "data.image_size=[320,320]",
         f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "segnet_mobilenetv2" and summary["image_size"] == [320, 320]
    assert summary["params"] == 3_390_099 and summary["macs"] > 1e9
    assert "GMACs at 320x320" in result.stdout


# torch's default exporter takes ~30 s a model here: one model in the fast suite, all of them in `slow`.
EXPORT_CASES = [
    *[pytest.param(name, "torchscript", id=f"{name}-torchscript") for name in MODELS],
    pytest.param("dsc_segnet", "dynamo", id="dsc_segnet-dynamo"),
    *[pytest.param(name, "dynamo", id=f"{name}-dynamo", marks=pytest.mark.slow) for name in MODELS if name != "dsc_segnet"],
]


@pytest.mark.parametrize(("name", "exporter"), EXPORT_CASES)
def test_every_model_exports_to_onnx_with_dynamic_batch_and_size(make_config, tmp_path, name, exporter):
    # Seeded: the 1e-4 bound is on logits of random weights, whose size varies from draw to draw.
    torch.manual_seed(0)
    net = instantiate(without_pretrained_weights(to_plain(make_config(f"model={name}").model))).eval()
    # Non-trivial BatchNorm statistics, so the exported graph must carry them right.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(net, tmp_path / f"{name}.onnx", (64, 64), exporter)
    assert onnx_max_abs_difference(net, path, [(1, 3, 64, 64), (2, 3, 97, 131)]) < 1e-4
    # Each exporter's graph converts to fp16 into a file onnxruntime loads and runs.
    fp16 = convert_fp16(path, tmp_path / f"{name}.fp16.onnx")
    assert onnx_max_abs_difference(net, fp16, [(1, 3, 64, 64)]) < 0.5


def save_untrained_checkpoint(path: Path, *overrides: str) -> Path:
    """A checkpoint of an untrained model with its training config (TINY: shapes at 32x32), as segkit.train writes."""
    run = build(compose_train(*overrides, output_dir=path.parent / "run"))
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(run.module)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def dsc_checkpoint(tmp_path_factory) -> Path:
    """The full-width dsc_segnet, untrained, its BatchNorm statistics made non-trivial."""
    path = save_untrained_checkpoint(tmp_path_factory.mktemp("dsc") / "dsc.ckpt", "model=dsc_segnet", "seed=0")
    checkpoint = torch.load(path, weights_only=True)
    for key, value in checkpoint["state_dict"].items():
        if key.endswith(("running_mean", "running_var")):
            value.uniform_(0.5, 1.5)
    torch.save(checkpoint, path)
    return path


def test_export_command_exports_a_checkpoint(tmp_path):
    ckpt = save_untrained_checkpoint(tmp_path / "tiny.ckpt", "model.encoder.width=0.125")
    report = export(ckpt, exporter="torchscript")
    assert Path(report["onnx"]) == tmp_path / "tiny.onnx" and report["bytes"] == (tmp_path / "tiny.onnx").stat().st_size
    assert report["max_abs_difference"] < 1e-4 and report["precision"] == "fp32"

    result = subprocess.run(
        [sys.executable, "-m", "segkit.export", f"ckpt_path={ckpt}", "format=onnx", "precision=int8",
         "calibration_images=4", f"output={tmp_path / 'cli.int8.onnx'}", "exporter=torchscript",
         f"hydra.run.dir={tmp_path / 'export-run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cli_report = json.loads(result.stdout[result.stdout.index("{"):])
    assert cli_report["calibration"] == {"split": "train", "images": 4} and cli_report["precision"] == "int8"
    assert read_metadata(inference_session(tmp_path / "cli.int8.onnx"), "cli").precision == "int8"
    with pytest.raises(ValueError, match=r"format='tflite'.*\['onnx'\]"):
        export(ckpt, fmt="tflite")
    with pytest.raises(ValueError, match=r"precision='int4'.*\['fp32', 'fp16', 'int8'\]"):
        export(ckpt, precision="int4")
    with pytest.raises(ValueError, match=r"calibration='test' is not a split of ShapesDataModule; .*'train', 'val'"):
        export(ckpt, precision="int8", calibration="test", exporter="torchscript")
    with pytest.raises(ValueError, match="calibration_images must be >= 1, got 0"):
        export(ckpt, precision="int8", calibration_images=0, exporter="torchscript")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'missing.ckpt'}: checkpoint not found"):
        export(tmp_path / "missing.ckpt")


@pytest.fixture(scope="module")
def dsc_exports(dsc_checkpoint) -> dict[str, dict]:
    """segkit.export's report of each precision of the untrained full-width dsc_segnet."""
    return {precision: export(dsc_checkpoint, dsc_checkpoint.with_suffix(f".{precision}.onnx"), precision=precision,
                              exporter="torchscript", calibration_images=8)
            for precision in ("fp32", "fp16", "int8")}


def test_fp16_and_int8_exports_are_smaller_and_close_to_pytorch(dsc_exports):
    sizes = {precision: report["bytes"] for precision, report in dsc_exports.items()}
    assert sizes["fp16"] < 0.55 * sizes["fp32"]
    assert sizes["int8"] < sizes["fp32"] / 3
    differences = {precision: report["max_abs_difference"] for precision, report in dsc_exports.items()}
    assert differences["fp32"] < 1e-4
    assert differences["fp16"] < 0.05 and differences["int8"] < 0.5, differences
    # Inputs and outputs stay float32 for the user; int8 is QDQ (quantize/dequantize pairs around the ops).
    for precision in ("fp16", "int8"):
        session = inference_session(dsc_exports[precision]["onnx"])
        assert [(i.name, i.type) for i in session.get_inputs()] == [("images", "tensor(float)")]
        assert [(o.name, o.type) for o in session.get_outputs()] == [("logits", "tensor(float)")]
    ops = {node.op_type for node in onnx.load(dsc_exports["int8"]["onnx"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_exports_carry_the_metadata_the_runtime_needs(dsc_exports):
    props = {entry.key: entry.value for entry in onnx.load(dsc_exports["fp16"]["onnx"]).metadata_props}
    assert json.loads(props["segkit.class_names"]) == ["object", "background", "border"]
    assert json.loads(props["segkit.colormap"]) == TRIMAP_COLORMAP.tolist()
    # The shapes data's own normalisation (conf/data/shapes.yaml), which training used.
    assert json.loads(props["segkit.mean"]) == [0.5] * 3 and json.loads(props["segkit.std"]) == [0.25] * 3
    assert json.loads(props["segkit.image_size"]) == [32, 32] and json.loads(props["segkit.size_divisor"]) == 16
    assert json.loads(props["segkit.precision"]) == "fp16"
    assert json.loads(props["segkit.segkit_version"]) == importlib.metadata.version("segkit")


@pytest.mark.slow
def test_int8_dsc_segnet_keeps_the_pets_miou_of_fp32_in_a_third_of_the_size(tmp_path):
    root = require_shared_pets()
    cfg = compose_train("experiment=pets_dsc_segnet", f"data.root={root}", "data.image_size=[64,64]",
                        "data.num_workers=0", "trainer.max_epochs=10", "trainer.check_val_every_n_epoch=1000",
                        # 250 steps: too short for the recipe's weight average (it remembers about 200)
                        "callbacks.ema=null", "optimizer.lr=0.003",
                        "trainer.accelerator=cpu", "callbacks.rich_progress_bar=null",
                        "+trainer.enable_progress_bar=false",
                        output_dir=tmp_path / "train", tiny=False)
    checkpoint = train(cfg)["last_checkpoint"]
    rows = {row["precision"]: row for row in measure_precisions(checkpoint, tmp_path / "onnx", ("fp32", "int8"),
                                                                threads=1, rounds=3)}
    fp32, int8 = rows["fp32"], rows["int8"]
    # Above all-background (0.19): a model that learnt the pets, so that keeping its mIoU means something.
    assert fp32["pytorch_miou"] > 0.3
    assert fp32["miou"] == pytest.approx(fp32["pytorch_miou"], abs=1e-3)
    assert int8["miou"] == pytest.approx(fp32["miou"], abs=0.02)
    assert int8["bytes"] <= fp32["bytes"] / 3


@pytest.mark.parametrize("output", ["same", "relative", "symlink", "hardlink"])
def test_export_refuses_to_write_over_its_checkpoint(tmp_path, monkeypatch, output):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"the trained weights")
    monkeypatch.chdir(tmp_path)
    target = {"same": checkpoint, "relative": Path("sub/../model.ckpt"), "symlink": tmp_path / "link.onnx",
              "hardlink": tmp_path / "hard.onnx"}[output]
    (tmp_path / "sub").mkdir()
    if output == "symlink":
        target.symlink_to(checkpoint)
    elif output == "hardlink":
        target.hardlink_to(checkpoint)
    with pytest.raises(ValueError, match=f"output={target} is the checkpoint ckpt_path={checkpoint} itself"):
        export(checkpoint, target)
    assert checkpoint.read_bytes() == b"the trained weights"
