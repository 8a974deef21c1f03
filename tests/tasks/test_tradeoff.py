import csv
import json

import pytest
import yaml

from segkit.callbacks.sweep_summary import summarize_sweep
from segkit.tasks.tradeoff import COSTS, pareto_front
from segkit.tradeoff import main
from tests.conftest import multirun

# Known scores given to the sweep's runs, so the fronts are known: at 32x32, segnet_mobilenetv2 has the fewest
# MACs (0.015 G) and dsc_segnet the fewest parameters (1.75 M) of the three.
SCORES = {"dsc_segnet": 0.60, "segnet": 0.70, "segnet_mobilenetv2": 0.65}


def test_pareto_front_keeps_the_points_nothing_beats():
    costs = [1.0, 2.0, 3.0, 4.0, 2.0, 5.0]
    scores = [0.5, 0.7, 0.6, 0.9, 0.7, 0.9]
    # 3.0 costs more than 2.0 for less; 5.0 costs more than 4.0 for the same; the two (2.0, 0.7) tie, both kept.
    assert pareto_front(costs, scores) == [True, True, False, True, True, False]
    assert pareto_front([1.0], [0.1]) == [True]


@pytest.mark.slow  # a three-job multirun: about half a minute
def test_a_model_multirun_gives_a_table_and_plot_with_the_pareto_front(tmp_path, capsys):
    sweep_dir, _ = multirun(tmp_path, "model=dsc_segnet,segnet,segnet_mobilenetv2", "data.num_train=16",
                            "data.num_val=8")
    for job in ("0", "1", "2"):
        metrics_file = sweep_dir / job / "metrics.json"
        metrics = json.loads(metrics_file.read_text())
        model = yaml.safe_load((sweep_dir / job / "config.yaml").read_text())["model"]["name"]
        metrics["val/miou"] = SCORES[model]
        metrics_file.write_text(json.dumps(metrics))

    main([str(sweep_dir), "--rounds", "3", "--warmup", "1", "--threads", "1"])

    rows = {row["model"]: row for row in csv.DictReader((sweep_dir / "tradeoff.csv").open())}
    assert {model: float(row["val/miou"]) for model, row in rows.items()} == SCORES
    assert {model: int(row["params"]) for model, row in rows.items()} == {
        "dsc_segnet": 1_752_356, "segnet": 15_277_577, "segnet_mobilenetv2": 3_390_099}
    assert float(rows["segnet"]["gmacs"]) == pytest.approx(0.570, abs=1e-3)
    assert {model: row["pareto_gmacs"] for model, row in rows.items()} == {
        "dsc_segnet": "False", "segnet": "True", "segnet_mobilenetv2": "True"}
    assert {row["pareto_mparams"] for row in rows.values()} == {"True"}
    # The latency front is whatever the measured times make it.
    models = list(rows)
    latency_front = pareto_front([float(rows[m]["latency_ms"]) for m in models], [SCORES[m] for m in models])
    assert [rows[m]["pareto_latency_ms"] == "True" for m in models] == latency_front
    assert all(float(row["latency_ms"]) > 0 and row["threads"] == "1" for row in rows.values())
    assert (sweep_dir / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (sweep_dir / "tradeoff.md").read_text()
    assert f"tradeoff: {sweep_dir / 'tradeoff.csv'}" in capsys.readouterr().out
    segnet_line = next(line for line in table.splitlines() if line.startswith("| segnet |"))
    assert segnet_line.startswith("| segnet | ") and "| 0.7000 | 0.570 | 15,277,577 |" in segnet_line
    dsc_line = next(line for line in table.splitlines() if line.startswith("| dsc_segnet |"))
    assert dsc_line.split(" | ")[-1].startswith("parameters")  # not on the GMACs front
    assert [name for _, name, _ in COSTS] == ["GMACs", "parameters", "latency"]


def test_a_config_naming_untrusted_code_is_refused(tmp_path):
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- model=mine\n")
    (job / "metrics.json").write_text(json.dumps({"val/miou": 0.5}))
    (job / "config.yaml").write_text("model:\n  _target_: os.system\n  command: echo hi\ndata:\n  image_size: [8, 8]\n")
    with pytest.raises(ValueError, match=r"config.yaml: refusing to build the model: model._target_: 'os.system'"):
        main([str(tmp_path / "sweep")])
    assert not (tmp_path / "sweep" / "tradeoff.csv").exists()


def test_a_run_with_test_time_augmentation_is_plotted_with_its_single_view_figure(tmp_path):
    # Latency and MACs are of one forward pass; a figure averaged over several would flatter the model.
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- model=dsc_segnet\n")
    (job / "metrics.json").write_text(json.dumps({
        "val/miou": 0.66, "val/iou_per_class": {"pet": 0.7}, "tta": "flip", "tta_scales": [0.75, 1.0],
        "without_tta": {"val/miou": 0.63, "val/iou_per_class": {"pet": 0.68}}}))
    model = {"_target_": "segkit.models.build_model", "name": "dsc_segnet", "num_classes": 3,
             "encoder": {"name": "vgg", "layout": "article", "conv": "dsc", "weights": None}}
    (job / "config.yaml").write_text(yaml.safe_dump({"model": model, "data": {"image_size": [32, 32]}}))

    main([str(tmp_path / "sweep"), "--rounds", "1", "--warmup", "0", "--threads", "1"])

    (row,) = csv.DictReader((tmp_path / "sweep" / "tradeoff.csv").open())
    assert float(row["val/miou"]) == 0.63
    (summary,) = summarize_sweep(tmp_path / "sweep", "val/miou")
    assert summary["val/miou"] == 0.66 and summary["without_tta.val/miou"] == 0.63
    assert summary["val/iou_pet"] == 0.7 and summary["without_tta.val/iou_pet"] == 0.68
