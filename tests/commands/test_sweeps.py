import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from segkit.callbacks.sweep_summary import SUMMARY_FILE
from segkit.config import CONFIG_DIR
from tests.conftest import REPO, multirun, write_pets, write_sbd, write_voc


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep_dir / SUMMARY_FILE).open()))


@pytest.mark.slow  # long: kept out of make test to hold it under 10 minutes
def test_a_2x2_multirun_makes_four_run_folders_and_a_summary_sorted_by_miou(tmp_path):
    sweep_dir, stdout = multirun(tmp_path, "model=dsc_segnet,segnet", "optimizer.lr=1e-3,5e-3")

    jobs = job_dirs(sweep_dir)
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    rows = read_summary(sweep_dir)
    assert len(rows) == 4
    assert {(row["model"], float(row["optimizer.lr"])) for row in rows} == {
        (model, lr) for model in ("dsc_segnet", "segnet") for lr in (1e-3, 5e-3)}
    mious = [float(row["val/miou"]) for row in rows]
    assert mious == sorted(mious, reverse=True)
    for row in rows:
        metrics = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
        assert float(row["val/miou"]) == pytest.approx(metrics["val/miou"])
        assert int(row["params"]) == {"dsc_segnet": 1_752_356, "segnet": 15_277_577}[row["model"]]
        assert row["status"] == "done" and Path(row["best_checkpoint"]).exists()
        assert float(row["val/iou_border"]) == pytest.approx(metrics["val/iou_per_class"]["border"])
    assert f"segkit: 4 runs, best val/miou first: {sweep_dir / SUMMARY_FILE}" in stdout
    assert not (tmp_path / "outputs").exists()  # nothing outside the sweep folder


@pytest.mark.slow  # two 3-trial searches: about 30 s
def test_optuna_search_is_seeded_and_optimises_the_metric(tmp_path):
    sampled = []
    for attempt in ("first", "second"):
        sweep_dir, _ = multirun(tmp_path / attempt, "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                                "data.num_train=16")
        rows = read_summary(sweep_dir)
        assert len(rows) == 3 and len(job_dirs(sweep_dir)) == 3
        for row in rows:
            assert 1e-4 <= float(row["optimizer.lr"]) <= 1e-2
            assert float(row["model.encoder.width"]) in (0.5, 0.75, 1.0)
        best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
        assert best["best_value"] == pytest.approx(float(rows[0]["val/miou"]))
        sampled.append(sorted(row["overrides"] for row in rows))
    assert sampled[0] == sampled[1]  # TPESampler(seed=1234): the same trials again


def test_every_experiment_runs_in_one_multirun(tmp_path):
    """`-m experiment=glob(*)` with fast_dev_run: each preset composes, builds and runs a batch."""
    data_root = tmp_path / "data"
    write_pets(data_root, {"trainval": ["Abyssinian_1", "beagle_2"], "test": ["pug_3", "pug_4"]})
    write_voc(data_root, {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003", "2007_000004"]})
    write_sbd(data_root, {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003"]})
    experiments = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))

    sweep_dir, _ = multirun(tmp_path, "experiment=glob(*)", "debug=fast_dev_run", f"paths.data_dir={data_root}",
                            "data.batch_size=2", "data.image_size=[64,64]")

    rows = read_summary(sweep_dir)
    assert sorted(row["experiment"] for row in rows) == experiments
    assert all(row["status"] == "done" and 0.0 <= float(row["val/miou"]) <= 1.0 for row in rows)


def test_slurm_launcher_config_follows_the_trainer():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                          "trainer.num_nodes=2", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min == 240
