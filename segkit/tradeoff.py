"""python -m segkit.tradeoff <sweep dir>: accuracy against cost for the runs of a multirun, as a table and a plot
(`segkit.tasks.tradeoff`).

    python -m segkit.train -m model=dsc_segnet,segnet,segnet_mobilenetv2 experiment=pets_dsc_segnet data.root=...
    python -m segkit.tradeoff multirun/2026-12-02/14-00-00
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from segkit.tasks.tradeoff import write_tradeoff
from segkit.utilities.allocator import keep_freed_memory


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m segkit.tradeoff", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the folder of a `python -m segkit.train -m ...` multirun")
    parser.add_argument("--metric", default="val/miou", help="the metrics.json key to plot (default: val/miou)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per model first (default: 3)")
    parser.add_argument("--rounds", type=int, default=20, help="timed forwards per model (default: 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for the timing "
                        "(default: torch's, one per core)")
    parser.add_argument("--trusted-targets", nargs="*", default=[],
                        help="model targets of your own that the runs' config.yaml may name")
    args = parser.parse_args(argv)
    keep_freed_memory()
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir}: not a folder")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = write_tradeoff(args.sweep_dir, args.metric, args.warmup, args.rounds, args.trusted_targets, args.threads)
    print(paths["md"].read_text(), end="")
    print(f"tradeoff: {paths['csv']}, {paths['md']}, {paths['png']}")


if __name__ == "__main__":
    main()
