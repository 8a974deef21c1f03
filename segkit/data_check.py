"""python -m segkit.data_check: reads every sample of a dataset once, before a long run is spent on it.

    python -m segkit.data_check data=pets data.root=../shared/data
    python -m segkit.data_check data=voc_aug data.root=~/datasets data.num_workers=2
    python -m segkit.data_check data=pets throughput=true    # the train loader against the training steps

Prints per split the number of samples, the share of labelled pixels per class and every problem found
(each message names its file), writes the same as data_check.json in the run folder, and exits with
status 1 when there were problems.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.bench.loader import measure_throughput
from segkit.config import CONFIG_PATH
from segkit.data.check import check_dataset, format_report
from segkit.data.files import FileDataModule


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="data_check")
def main(cfg: DictConfig) -> None:
    if cfg.throughput:
        rates = measure_throughput(cfg, cfg.throughput_batches)
        print(f"train loader {rates['loader_images_per_s']:.1f} images/s ({rates['num_workers']} workers) against "
              f"training {rates['train_images_per_s']:.1f} images/s (batch {rates['batch_size']}): loading is "
              f"{rates['loader_images_per_s'] / rates['train_images_per_s']:.1f}x the training speed")
        (Path(cfg.paths.output_dir) / "throughput.json").write_text(json.dumps(rates, indent=2) + "\n")
        return
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, FileDataModule):
        sys.exit(f"data={type(datamodule).__name__} is generated, not read from files: nothing to check")
    datamodule.prepare_data()
    report = check_dataset(datamodule, num_workers=datamodule.num_workers)
    print(format_report(report))
    report_path = Path(cfg.paths.output_dir) / "data_check.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {report_path}")
    if any(result["problems"] for result in report.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
