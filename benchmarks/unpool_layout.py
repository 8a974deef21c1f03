"""SegNet's unpooling returning NCHW (as it did) against keeping a channels_last input channels_last (segkit's
`max_unpool2d`), in a channels_last training step, side by side.

    python benchmarks/unpool_layout.py [--model dsc_segnet] [--size 96] [--batch 8] [--rounds 8]

One process, one network, one batch: rounds alternate the two unpoolings, each round timing two training steps
(forward, cross-entropy, backward, Adam; `segkit.bench.plain_loop.random_batch_step`) after one untimed step. The NCHW variant is segkit's unpooling of an NCHW
copy of its input, the scatter the decoder used before. Prints the median seconds per step of each and the
median of the per-round speed ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segkit.bench.plain_loop import random_batch_step
from segkit.models import segnet
from segkit.models.encoders import Pool
from segkit.utilities.allocator import keep_freed_memory

channels_last_unpool = segnet.max_unpool2d


def nchw_unpool(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    return channels_last_unpool(x.contiguous(), Pool(pool.indices.contiguous(), pool.size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dsc_segnet")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    keep_freed_memory()  # as segkit.train does
    step = random_batch_step(args.model, args.size, args.batch)

    variants = {"nchw": nchw_unpool, "channels_last": channels_last_unpool}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, unpool in variants.items():
            segnet.max_unpool2d = unpool  # the decoder looks the function up at each call
            step()
            start = time.perf_counter()
            step()
            step()
            seconds[name].append((time.perf_counter() - start) / 2)
    for name, values in seconds.items():
        print(f"{name:>13}: {statistics.median(values):.3f} s/step")
    ratio = statistics.median(a / b for a, b in zip(seconds["nchw"], seconds["channels_last"]))
    print(f"{args.model} {args.size}x{args.size} batch {args.batch}, {torch.get_num_threads()} threads: channels_last "
          f"unpooling {ratio:.2f}x the steps/s of NCHW (median of {args.rounds} side-by-side rounds)")


if __name__ == "__main__":
    main()
