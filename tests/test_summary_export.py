import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from segkit.checkpoints import CheckpointError
from segkit.config import CONFIG_DIR, to_plain
from segkit.export import export, export_onnx, onnx_max_abs_difference
from segkit.models import without_pretrained_weights
from segkit.module import SegmentationModule
from segkit.summary import summarize

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
    net = instantiate(without_pretrained_weights(to_plain(make_config(f"model={name}").model))).eval()
    # Non-trivial BatchNorm statistics, so the exported graph must carry them right.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(net, tmp_path / f"{name}.onnx", (64, 64), exporter)
    assert onnx_max_abs_difference(net, path, [(1, 3, 64, 64), (2, 3, 97, 131)]) < 1e-4


def test_export_command_exports_a_checkpoint(tmp_path):
    module = SegmentationModule(
        {"_target_": "segkit.models.build_model", "num_classes": 2, "name": "tiny", "input_norm": True,
         "encoder": {"name": "vgg", "layout": "article", "conv": "dsc", "width": 0.125}},
        num_classes=2, optimizer={"_target_": "torch.optim.Adam", "_partial_": True}, channels_last=True,
    )
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    report = export(tmp_path / "tiny.ckpt", exporter="torchscript")
    assert Path(report["onnx"]) == tmp_path / "tiny.onnx" and Path(report["onnx"]).stat().st_size > 0
    assert report["max_abs_difference"] < 1e-4

    result = subprocess.run(
        [sys.executable, "-m", "segkit.export", f"ckpt_path={tmp_path / 'tiny.ckpt'}", "format=onnx",
         f"output={tmp_path / 'cli.onnx'}", "exporter=torchscript", f"hydra.run.dir={tmp_path / 'export-run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout[result.stdout.index("{"):])["max_abs_difference"] < 1e-4
    with pytest.raises(ValueError, match=r"format='tflite'.*\['onnx'\]"):
        export(tmp_path / "tiny.ckpt", fmt="tflite")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'missing.ckpt'}: checkpoint not found"):
        export(tmp_path / "missing.ckpt")


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
