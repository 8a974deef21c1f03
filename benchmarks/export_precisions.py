"""File size, CPU latency, throughput and mIoU of fp32, fp16 and int8 ONNX exports (docs/export.md).

    python benchmarks/export_precisions.py --checkpoint outputs/pets_dsc/checkpoints/last.ckpt [more.ckpt ...] \
        --data-root ../shared/data --untrained segnet_vgg16bn
    python benchmarks/export_precisions.py --untrained dsc_segnet segnet_mobilenetv2 --data-root ../shared/data

Each trained checkpoint gets every column (mIoU on `--miou-split` of its data, default test); each `--untrained`
model is built from its config without pretrained weights, at the first checkpoint's data and image size (without
a checkpoint: `--experiment`'s, default pets_dsc_segnet), for size and speed only. The rows come from `segkit.bench.export.measure_precisions`; the table is printed and the
rows written to <output>/export_precisions.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import lightning as L
import onnxruntime
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from segkit.bench.export import TABLE_HEADER, format_rows, measure_precisions
from segkit.checkpoints import read_training_config
from segkit.config import CONFIG_DIR, to_plain
from segkit.models import without_pretrained_weights
from segkit.tasks.train import build
from segkit.utilities.allocator import keep_freed_memory


def save_untrained_checkpoint(model: str, data: dict, path: Path) -> Path:
    """A checkpoint of `model`'s config, without pretrained weights, trained on nothing, on `data`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "trainer.accelerator=cpu"])
    with open_dict(cfg):
        cfg.data = OmegaConf.create(data)
        cfg.model = OmegaConf.create(without_pretrained_weights(to_plain(cfg.model)))
        cfg.paths.output_dir = str(path.parent)
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(build(cfg).module)
    trainer.save_checkpoint(path)
    return path


def experiment_data(experiment: str, data_root: str | None) -> dict:
    """The data config of `experiment=<experiment>` (its root `data_root` when given)."""
    overrides = [f"experiment={experiment}"] + ([f"data.root={data_root}"] if data_root else [])
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return to_plain(compose("train", overrides=overrides).data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="*", default=[], help="trained segkit checkpoints, one row group each")
    parser.add_argument("--experiment", default="pets_dsc_segnet",
                        help="without a checkpoint: the experiment whose data the untrained models use")
    parser.add_argument("--data-root", default=None, help="its data's root (default: the checkpoint's data.root)")
    parser.add_argument("--untrained", nargs="*", default=[], help="model configs measured untrained (no mIoU)")
    parser.add_argument("--miou-split", default="test", help="the split of the checkpoint's data for mIoU")
    # One thread by default: on a shared, oversubscribed machine two OpenMP threads wait on each other.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--output", default="outputs/export_precisions")
    args = parser.parse_args()
    keep_freed_memory()  # as segkit's commands do: PyTorch's batches would otherwise be mapped afresh each call
    output = Path(args.output)
    options = {"threads": args.threads, "batch_size": args.batch_size, "rounds": args.rounds,
               "data_root": args.data_root, "calibration_images": args.calibration_images}
    results, data = {}, None
    for checkpoint in map(Path, args.checkpoint):
        config = read_training_config(checkpoint)
        data = data or config["data"]
        name = config["model"]["name"]
        results[name] = measure_precisions(checkpoint, output / name, miou_split=args.miou_split, **options)
    if data is None:
        data = experiment_data(args.experiment, args.data_root)
    for model in args.untrained:
        untrained = save_untrained_checkpoint(model, data, output / f"{model}-untrained.ckpt")
        results[f"{model} (untrained)"] = measure_precisions(untrained, output, miou_split=None, **options)
    lines = TABLE_HEADER + [line for model, rows in results.items() for line in format_rows(model, rows)]
    machine = (f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
               f"onnxruntime {onnxruntime.__version__}")
    print("\n".join([*lines, "", machine]))
    (output / "export_precisions.json").write_text(json.dumps({"machine": machine, "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
