"""The hand-written PyTorch training loop alone (`segkit.bench.plain_loop`), on the bench config: prints its
training images/s.

    python benchmarks/plain_loop.py [model=...] [bench.image_size=[H,W]] [bench.batch_size=N] [...]
"""

from __future__ import annotations

import statistics
import sys

from segkit.bench.measure import plain_loop_rates


def main(overrides: list[str]) -> None:
    cfg, device, rates = plain_loop_rates(overrides)
    print(f"plain loop: {cfg.model.name} {statistics.median(rates):.2f} training images/s "
          f"(batch {cfg.bench.batch_size}, {'x'.join(map(str, cfg.bench.image_size))}, {device}, "
          f"median of {cfg.bench.repeats}: {', '.join(f'{rate:.2f}' for rate in rates)})")


if __name__ == "__main__":
    main(sys.argv[1:])
