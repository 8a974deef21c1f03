"""SegNet's unpooling returning NCHW (as it did) against keeping a channels_last input channels_last (segkit's
`max_unpool2d`), in a channels_last training step, side by side.

    python benchmarks/unpool_layout.py [--model dsc_segnet] [--size 96] [--batch 8] [--rounds 8]

One process, one network, one batch: rounds alternate the two unpoolings, each round timing two training steps
(forward, cross-entropy, backward, Adam) after one untimed step. The NCHW variant is segkit's unpooling of an NCHW
copy of its input, the scatter the decoder used before. Prints the median seconds per step of each and the
median of the per-round speed ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import segkit.models.segnet as segnet
from segkit.allocator import keep_freed_memory
from segkit.config import CONFIG_DIR
from segkit.models.encoders import Pool

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
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"model={args.model}", "data.num_classes=3"])
    torch.manual_seed(0)
    net = instantiate(cfg.model).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    images = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, 3, (args.batch, args.size, args.size))

    def step() -> None:
        loss = F.cross_entropy(net(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

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
