"""The `segkit` console command: `segkit <command> [overrides]` runs `python -m segkit.<command> [overrides]`.

    segkit --help
    segkit train model=dsc_segnet trainer.max_epochs=1
    segkit eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

# Each subcommand: the module that `python -m` runs for it, and what it does.
COMMANDS = {
    "train": ("segkit.train", "train a model on a dataset, both chosen by config; writes metrics.json"),
    "eval": ("segkit.eval", "the metrics of a checkpoint (or ONNX export) on a split of its data or another"),
    "predict": ("segkit.predict", "class masks and overlays of image files"),
    "export": ("segkit.export", "a checkpoint as an ONNX file (fp32, fp16 or int8) for onnxruntime"),
    "summary": ("segkit.summary", "a model's parameters and MACs at the configured image size"),
    "lr_find": ("segkit.lr_find", "the learning-rate range test; prints the suggested lr"),
    "bench": ("segkit.bench", "speed and memory of each model, and segkit's overhead"),
    "data_check": ("segkit.data_check", "read every sample of a dataset once and report problems"),
    "tradeoff": ("segkit.tradeoff", "a sweep's mIoU against GMACs, parameters and CPU latency, Pareto fronts marked"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join([
        "usage: segkit <command> [key=value ...] [hydra flags]",
        "",
        "Each command is also `python -m segkit.<command>`; `segkit <command> --help` shows its config.",
        "",
        "commands:",
        *lines,
    ])


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = arguments[0], arguments[1:]
    if name not in COMMANDS:
        sys.exit(f"segkit: unknown command {name!r}; commands: {', '.join(COMMANDS)}\n\n{usage()}")
    sys.argv = [f"segkit {name}", *rest]  # what the command's Hydra main reads
    # Run as `python -m segkit.<command>` runs it, as __main__: trainer=ddp starts its other processes by running
    # __main__'s module again (segkit.engine.distributed.child_command).
    runpy.run_module(COMMANDS[name][0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
