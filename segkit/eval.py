"""python -m segkit.eval ckpt_path=...: the metrics of a trained checkpoint on a split of its data, or of
another dataset with the same classes, written to metrics.json.

    python -m segkit.eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt       # its val split
    python -m segkit.eval ckpt_path=... data=pets data.root=../shared/data data.split=test
    python -m segkit.eval onnx_path=model.int8.onnx data=pets data.root=../shared/data data.split=test
    python -m segkit.eval ckpt_path=... show=8     # gallery.png: 8 images | truth | prediction

Besides metrics.json it writes confusion_matrix.png and iou_per_class.png (segkit.engine.figures).

An ONNX export of segkit.export runs in onnxruntime on the CPU through the same test loop and metrics;
it carries no data config, so `data=...` is required, and its loss has no class weights.

The model and its training config come from the checkpoint: only the data (`data=...`, `data.*`), the
paths and the trainer's accelerator, devices and precision can be set on the command line.
"""

from __future__ import annotations

import sys

import hydra
from hydra.errors import OverrideParseException
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH
from segkit.tasks.evaluate import check_overrides, evaluate, register_checkpoint_data, trusted_targets_override
from segkit.utilities.allocator import keep_freed_memory


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    keep_freed_memory()
    evaluate(cfg)


def main() -> None:
    """Checks the overrides and registers the checkpoint's data config, then lets Hydra compose
    conf/eval.yaml, whose data group starts from that config."""
    # Overrides are the arguments with a value or a deletion; the rest are Hydra's flags and their values.
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-") and ("=" in arg or arg.startswith("~"))]
    try:
        key, path = check_overrides(overrides)
        if key == "ckpt_path":
            register_checkpoint_data(path, trusted_targets_override(overrides))
    except (ValueError, OSError, OverrideParseException) as error:
        sys.exit(f"segkit.eval: {error}")
    _hydra_main()


if __name__ == "__main__":
    main()
