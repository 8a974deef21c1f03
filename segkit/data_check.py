"""python -m segkit.data_check: reads every sample of a dataset once, before a long run is spent on it.

    python -m segkit.data_check data=pets data.root=../shared/data
    python -m segkit.data_check data=voc_aug data.root=~/datasets data.num_workers=2
    python -m segkit.data_check data=pets throughput=true    # the train loader against the training steps

Prints per split the number of samples, the share of labelled pixels per class and every problem found
(each message names its file), writes the same as data_check.json in the run folder, and exits with
status 1 when there were problems.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH
from segkit.data.check import format_report
from segkit.tasks.data_check import check_data, check_throughput


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="data_check")
def main(cfg: DictConfig) -> None:
    if cfg.throughput:
        rates = check_throughput(cfg)
        print(f"train loader {rates['loader_images_per_s']:.1f} images/s ({rates['num_workers']} workers) against "
              f"training {rates['train_images_per_s']:.1f} images/s (batch {rates['batch_size']}): loading is "
              f"{rates['loader_images_per_s'] / rates['train_images_per_s']:.1f}x the training speed")
        return
    report, report_path = check_data(cfg)
    print(format_report(report))
    print(f"report: {report_path}")
    if any(result["problems"] for result in report.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
