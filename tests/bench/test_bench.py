import copy
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from segkit.bench.hardware import flop_utilisation, peak_tflops, resolve_device
from segkit.bench.measure import bench, bench_config, bench_models, row_config, timed_fit, training_parts
from segkit.models.summary import summarize
from tests.conftest import REPO

CPU = torch.device("cpu")
# One small model, tiny tensors, few steps: the whole bench in seconds.
TINY_BENCH = [
    "bench.models=[dsc_segnet]",
    "model.encoder.width=0.25",
    "bench.image_size=[32,32]",
    "bench.batch_size=2",
    "bench.warmup=1",
    "bench.steps=2",
    "bench.seconds=0",
    "bench.repeats=2",
    "bench.loader_batches=2",
    "bench.device=cpu",
    "bench.threads=1",  # 2 threads on the 2 cores that other tests share run many times slower
    "data.num_train=8",
    "data.batch_size=2",
    "data.image_size=[32,32]",
]
ROW_FIELDS = {
    "model", "option", "option_keys", "image_size", "batch_size", "precision", "channels_last", "params", "macs",
    "train_images_per_s", "plain_train_images_per_s", "overhead_ratio", "train_images_per_s_repeats",
    "plain_train_images_per_s_repeats", "step_seconds", "inference_images_per_s", "train_images_per_s_per_gmac", "inference_images_per_s_per_gmac",
    "latency_ms_batch1", "peak_memory_mib",
    "peak_memory_kind", "peak_tflops", "train_mfu", "inference_mfu",
}


@pytest.fixture
def one_thread():
    """As bench.threads=1 does, for tests that train outside `bench`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def bench_cfg(tmp_path):
    def _make(*overrides):
        cfg = bench_config([*TINY_BENCH, *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "bench")
        return cfg

    return _make


def test_tiny_bench_writes_every_field_the_table_and_consistent_figures(bench_cfg):
    cfg = bench_cfg()
    result = bench(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert json.loads((run_dir / "bench.json").read_text()) == result
    assert result["device_type"] == "cpu" and result["torch_threads"] == 1
    assert result["settings"] == {"image_size": [32, 32], "batch_size": 2, "warmup": 1, "steps": 2, "seconds": 0,
                                  "repeats": 2}

    (row,) = result["rows"]
    assert set(row) == ROW_FIELDS
    assert row["model"] == "dsc_segnet" and row["option"] == "default" and row["option_keys"] == {}
    net = instantiate({**cfg.model, "num_classes": 3})
    assert row["params"] == sum(p.numel() for p in net.parameters())
    assert row["macs"] == summarize(net, [32, 32])["macs"]
    assert len(row["train_images_per_s_repeats"]) == len(row["plain_train_images_per_s_repeats"]) == 2
    repeats = {"segkit": row["train_images_per_s_repeats"], "plain": row["plain_train_images_per_s_repeats"]}
    for loop, rates in repeats.items():
        seconds = row["step_seconds"][loop]
        assert [len(repeat) for repeat in seconds] == [2, 2]  # bench.seconds=0: bench.steps steps per repeat
        assert rates == [pytest.approx(2 * 2 / sum(repeat)) for repeat in seconds]  # images over seconds
    assert row["train_images_per_s"] == statistics.median(row["train_images_per_s_repeats"])
    pairs = zip(sum(row["step_seconds"]["segkit"], []), sum(row["step_seconds"]["plain"], []))
    assert row["overhead_ratio"] == pytest.approx(statistics.median(plain / segkit for segkit, plain in pairs))
    assert result["overhead_ratio_min"] == row["overhead_ratio"]
    assert row["inference_images_per_s"] > 0 and row["latency_ms_batch1"] > 0
    assert row["train_images_per_s_per_gmac"] == pytest.approx(row["train_images_per_s"] * 1e9 / row["macs"])
    assert row["inference_images_per_s_per_gmac"] == pytest.approx(row["inference_images_per_s"] * 1e9 / row["macs"])
    assert row["peak_memory_kind"] == "rss_peak" and row["peak_memory_mib"] > 0
    assert row["peak_tflops"] is None and row["train_mfu"] is None and row["inference_mfu"] is None  # no GPU

    loader = result["loader"]
    assert loader["data"] == "ShapesDataModule" and loader["batch_size"] == 2 and loader["images_per_s"] > 0
    assert loader["over_fastest_training"] == pytest.approx(loader["images_per_s"] / row["train_images_per_s"])

    table = (run_dir / "bench.md").read_text()
    assert f"| dsc_segnet | default | {row['params']:,} |" in table
    assert f"| {row['overhead_ratio']:.3f} |" in table
    assert (f"| {row['inference_images_per_s']:.2f} | {row['train_images_per_s_per_gmac']:.1f} "
            f"| {row['inference_images_per_s_per_gmac']:.1f} |") in table
    assert f"lowest {row['overhead_ratio']:.3f}" in table and f"{result['torch_threads']} threads" in table


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_trainer_and_plain_loop_take_the_same_steps_in_turns(bench_cfg, one_thread):
    """From equal weights, the Trainer and the plain loop, stepping in turns on the same batches with the
    same loss and optimizer config, end with equal weights and BatchNorm statistics; each step is timed."""
    cfg = bench_cfg("optimizer=sgd", "bench.steps=3", "bench.seconds=0")  # SGD: momentum, weight decay carry over
    row = row_config(cfg, "dsc_segnet", "default", CPU)
    torch.manual_seed(0)
    parts = training_parts(row, CPU)
    fresh = copy.deepcopy(parts.module.net.state_dict())
    plain = dataclasses.replace(parts, module=copy.deepcopy(parts.module))

    steps = timed_fit(row, parts, plain)

    assert isinstance(steps.optimizer, torch.optim.SGD) and steps.optimizer.defaults["momentum"] == 0.9
    assert len(steps.segkit_seconds) == len(steps.plain_seconds) == 3 and steps.batch_size == 2
    assert min(steps.segkit_seconds + steps.plain_seconds) > 0
    plain_state, segkit_state = plain.module.net.state_dict(), parts.module.net.state_dict()
    for name, value in plain_state.items():
        torch.testing.assert_close(segkit_state[name], value, rtol=1e-5, atol=1e-6, msg=f"{name} differs")
    # 1 warm-up and 3 timed steps each changed the weights, so the comparison says something.
    assert any(not torch.equal(fresh[name], value) for name, value in plain_state.items())
    tracked = [int(value) for name, value in segkit_state.items() if name.endswith("num_batches_tracked")]
    assert tracked and set(tracked) == {4}


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_timed_fit_runs_until_its_seconds_are_reached(bench_cfg, one_thread):
    cfg = bench_cfg("bench.steps=1", "bench.seconds=0.5")
    row = row_config(cfg, "dsc_segnet", "default", CPU)
    parts = training_parts(row, CPU)
    steps = timed_fit(row, parts, dataclasses.replace(parts, module=copy.deepcopy(parts.module)))
    timed = sum(steps.segkit_seconds) + sum(steps.plain_seconds)
    assert timed >= 0.5 and timed - steps.segkit_seconds[-1] - steps.plain_seconds[-1] < 0.5  # stopped at once


def test_row_config_applies_model_option_and_bench_trainer(bench_cfg):
    cfg = bench_cfg("model.encoder.width=0.5")
    row = row_config(cfg, "dsc_segnet", "compile", CPU)
    assert row.model.compile is True and row.model.encoder.width == 0.5  # the command line's model keeps its keys
    assert row.trainer.max_steps == -1 and row.trainer.min_epochs is None and row.trainer.limit_val_batches == 0
    assert not row.trainer.enable_checkpointing and row.callbacks is None and row.logger is None
    other = row_config(cfg, "segnet_vgg16bn", "bf16", CPU)
    assert other.model.name == "segnet_vgg16bn" and other.model.encoder.weights is None  # no pretrained download
    assert other.model.encoder.width == 1.0 and other.trainer.precision == "bf16-mixed"
    assert cfg.trainer.get("max_steps") in (None, -1)  # the composed config is left alone
    with pytest.raises(ValueError, match=r"bench.options: 'fast' is not in bench.option_sets; valid: \['default'"):
        row_config(cfg, "dsc_segnet", "fast", CPU)


def test_model_names_and_the_command_lines_model():
    assert bench_models(None) == ["dsc_segnet", "segnet", "segnet_mobilenetv2", "segnet_vgg16bn"]
    with pytest.raises(ValueError, match=r"bench.models: \['unet'\] have no config in .*model; valid: \['dsc_segnet'"):
        bench_models(["unet"])
    assert bench_config([]).bench.models is None
    assert list(bench_config(["model=segnet"]).bench.models) == ["segnet"]
    assert list(bench_config(["model=segnet", "bench.models=[segnet,dsc_segnet]"]).bench.models) == [
        "segnet", "dsc_segnet"]


def test_bad_settings_fail_with_the_key(bench_cfg):
    with pytest.raises(ValueError, match=r"bench.warmup=0: expected an integer >= 1"):
        bench(bench_cfg("bench.warmup=0"))
    with pytest.raises(ValueError, match=r"bench.seconds=-1: expected a number of seconds >= 0"):
        bench(bench_cfg("bench.seconds=-1"))
    with pytest.raises(ValueError, match=r"bench.device='tpu': expected auto, cpu or cuda"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match=r"trainer.precision='16-mixed': the bench supports"):
        training_parts(row_config(bench_cfg("trainer.precision=16-mixed"), "dsc_segnet", "default", CPU), CPU)


def test_peak_tflops_by_card_name_and_precision(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16-mixed") == 756.0
    assert peak_tflops("NVIDIA H200", "32-true") == 494.7  # TF32 convolutions
    assert peak_tflops("NVIDIA L40S", "bf16-mixed") == 362.0 and peak_tflops("NVIDIA L4", "bf16-mixed") == 121.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16-mixed") == 312.0
    assert peak_tflops("Tesla T4", "bf16-mixed") is None
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert peak_tflops("NVIDIA H200", "32-true") == 66.9


def test_flop_utilisation_of_the_reference_setup():
    # segnet_vgg16bn at 320x320: 62.64 GMACs per image; 100 training images/s on an H100 SXM in bf16:
    # 3 passes x 2 FLOPs x 62.64e9 x 100 / 989.4e12 = 3.80%.
    assert flop_utilisation(62_640_000_000, 100.0, 989.4, forward_passes=3) == pytest.approx(0.03799, abs=1e-5)
    assert flop_utilisation(62_640_000_000, 300.0, 989.4, forward_passes=1) == pytest.approx(0.03799, abs=1e-5)


def test_compile_option_compiles_the_network_in_place_keeping_parameter_names(bench_cfg):
    cfg = bench_cfg()
    plain = instantiate({**cfg.model, "num_classes": 3})
    compiled = instantiate({**cfg.model, "num_classes": 3, "compile": True})
    assert plain._compiled_call_impl is None and compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())


@pytest.mark.slow
def test_compiled_rows_train_and_infer(bench_cfg):
    result = bench(bench_cfg("bench.options=[default,compile]", "bench.loader_batches=0"))
    assert [row["option"] for row in result["rows"]] == ["default", "compile"]
    assert result["rows"][1]["option_keys"] == {"model.compile": True}
    assert result["rows"][1]["train_images_per_s"] > 0 and result["loader"] is None


@pytest.mark.slow  # long: kept out of make test to hold it under 10 minutes
def test_command_line_benches_the_chosen_model_and_prints_the_table(tmp_path):
    run_dir = tmp_path / "bench-run"
    overrides = [override for override in TINY_BENCH if not override.startswith("bench.models")]
    result = subprocess.run(
        [sys.executable, "-m", "segkit.bench", "model=dsc_segnet", *overrides, "bench.repeats=1",
         f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((run_dir / "bench.json").read_text())
    assert [row["model"] for row in written["rows"]] == ["dsc_segnet"]
    assert "| dsc_segnet | default |" in result.stdout and "segkit/plain training images/s: lowest" in result.stdout
    assert (run_dir / "bench.md").read_text().strip() in result.stdout


def test_plain_loop_script_prints_the_median_of_its_repeats(capsys, one_thread):
    spec = importlib.util.spec_from_file_location("plain_loop_script", REPO / "benchmarks" / "plain_loop.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([*TINY_BENCH, "model=dsc_segnet"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("plain loop: dsc_segnet ") and "(batch 2, 32x32, cpu, median of 2: " in line
    rates = [float(rate) for rate in line.split("median of 2: ")[1].rstrip(")").split(", ")]
    assert float(line.split()[3]) == pytest.approx(statistics.median(rates), abs=0.01)


def test_peers_side_by_side_times_every_network_in_turns(bench_cfg, monkeypatch):
    """bench.peers=true: segkit's networks and torchvision's (smp's too when installed) take the same steps in
    alternating rounds; GMAC/s is images/s x GMACs; a peer whose package is missing is named, not dropped silently."""
    from segkit.bench import peers

    real_find_spec = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec",
                        lambda name: None if name == "segmentation_models_pytorch" else real_find_spec(name))
    cfg = bench_cfg("bench.peers=true")
    comparison = peers.bench_peers(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert json.loads((run_dir / "peers.json").read_text()) == comparison
    assert [row["model"] for row in comparison["rows"]] == ["dsc_segnet", "lraspp_mobilenetv3", "deeplabv3_mobilenetv3"]
    assert comparison["skipped_peers"] == ["smp_unet_mobilenetv2"]
    for row in comparison["rows"]:
        assert len(row["train_images_per_s_rounds"]) == len(row["latency_ms_batch1_rounds"]) == 2
        assert row["train_images_per_s"] == max(row["train_images_per_s_rounds"])
        assert row["train_gmacs_per_s"] == pytest.approx(row["train_images_per_s"] * row["macs"] / 1e9)
        assert row["macs"] == summarize(peers.PEERS[row["model"]][0](3) if row["source"] != "segkit"
                                        else instantiate(cfg.model), [32, 32])["macs"]
    dsc, lraspp = comparison["rows"][0], comparison["rows"][1]
    assert comparison["train_gmacs_per_s_ratios"]["dsc_segnet/lraspp_mobilenetv3"] == pytest.approx(
        dsc["train_gmacs_per_s"] / lraspp["train_gmacs_per_s"])
    table = (run_dir / "peers.md").read_text()
    assert "| lraspp_mobilenetv3 | torchvision |" in table and "pip install 'segkit[peers]'" in table


def test_gpu_check_dry_run_runs_every_step_on_the_cpu_and_writes_one_report(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: the GPU machine's steps (bench, peers, training; DDP skipped with one
    device) at tiny sizes on the CPU, each step's status and output in report.md."""
    output = tmp_path / "check"
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--output", str(output)],
                            cwd=REPO, capture_output=True, text=True, timeout=1500,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr
    report = (output / "report.md").read_text()
    for step in ("environment", "bench", "peers", "train"):
        assert f"## {step}: ok" in report
    assert "## ddp: skipped" in report and "(dry run on the CPU)" in report
    assert json.loads((output / "train" / "metrics.json").read_text())["epochs"] == 1
    assert (output / "peers" / "peers.json").is_file() and (output / "bench" / "bench.json").is_file()
