"""python -m segkit.export ckpt_path=... [format=onnx] [precision=fp32|fp16|int8] [output=model.onnx]: the
trained network as an ONNX file with dynamic batch and spatial size, checked against PyTorch with
onnxruntime, carrying in its metadata what `segkit.runtime` needs to run it without torch.

    python -m segkit.export ckpt_path=... precision=int8 calibration=train calibration_images=32
    python -m segkit.export ckpt_path=... precision=fp16

The work is `segkit.tasks.export.export`.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH
from segkit.tasks.export import export
from segkit.utilities.allocator import keep_freed_memory


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    keep_freed_memory()
    report = export(cfg.ckpt_path, cfg.output, cfg.format, cfg.precision, cfg.calibration, cfg.calibration_images,
                    cfg.data_root, tuple(cfg.example_size), cfg.check, cfg.exporter,
                    cfg.trusted_targets)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
