"""What `segkit data_check` does: reads every sample of a dataset once (`check_data`), or measures the train
loader against the training steps (`check_throughput`), and writes the report into the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.bench.loader import measure_throughput
from segkit.config.validate import ConfigError
from segkit.data.check import check_dataset
from segkit.data.files import FileDataModule


def check_throughput(cfg: DictConfig) -> dict[str, float]:
    """The train loader's images/s against the training's, written to throughput.json."""
    rates = measure_throughput(cfg, cfg.throughput_batches)
    (Path(cfg.paths.output_dir) / "throughput.json").write_text(json.dumps(rates, indent=2) + "\n")
    return rates


def check_data(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Per split: samples, class pixel shares and every problem found, and the data_check.json it was written to."""
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, FileDataModule):
        raise ConfigError(f"data={type(datamodule).__name__} is generated, not read from files: nothing to check")
    datamodule.prepare_data()
    report = check_dataset(datamodule, num_workers=datamodule.num_workers)
    report_path = Path(cfg.paths.output_dir) / "data_check.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report, report_path
