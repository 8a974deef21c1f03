"""glibc's default allocation settings against segkit's (`segkit.utilities.allocator.keep_freed_memory`), side by side.

    python benchmarks/allocator.py [--model dsc_segnet] [--size 128] [--batch 16] [--rounds 6]

One process, one network, one batch: rounds alternate the two settings, each round timing two training steps
(forward, cross-entropy, backward, Adam) after one untimed step under the new setting, and counting the minor
page faults. Prints the median seconds per step of each setting, the faults per step and the median of the
per-round speed ratios.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from segkit.bench.plain_loop import random_batch_step
from segkit.utilities.allocator import keep_freed_memory, use_system_defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dsc_segnet")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    step = random_batch_step(args.model, args.size, args.batch)

    seconds: dict[str, list[float]] = {"system": [], "segkit": []}
    faults: dict[str, list[float]] = {"system": [], "segkit": []}
    for _ in range(args.rounds):
        for setting in seconds:
            keep_freed_memory() if setting == "segkit" else use_system_defaults()
            step()
            start_faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            step()
            step()
            seconds[setting].append((time.perf_counter() - start) / 2)
            faults[setting].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults) / 2)
    for setting in seconds:
        print(f"{setting:>7}: {statistics.median(seconds[setting]):.3f} s/step, "
              f"{statistics.median(faults[setting]):.0f} minor page faults/step")
    ratio = statistics.median(a / b for a, b in zip(seconds["system"], seconds["segkit"]))
    print(f"{args.model} {args.size}x{args.size} batch {args.batch}: segkit's setting {ratio:.2f}x the steps/s "
          f"of glibc's defaults (median of {args.rounds} side-by-side rounds)")


if __name__ == "__main__":
    main()
