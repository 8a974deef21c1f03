"""python -m segkit.bench: speed and memory of each model, and segkit's overhead against a plain loop.

    python -m segkit.bench                                   # every model config, CPU or GPU
    python -m segkit.bench model=dsc_segnet bench.image_size=[320,320] bench.batch_size=32
    python -m segkit.bench bench.options=[default,compile,nchw]
    python -m segkit.bench bench.peers=true                  # side by side with torchvision's and smp's networks

What each figure is: `segkit.bench.measure`. Everything goes to bench.json and bench.md in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from segkit.bench.measure import bench, bench_chosen_model_only
from segkit.bench.peers import bench_peers, format_comparison
from segkit.bench.report import format_table
from segkit.config import CONFIG_PATH
from segkit.utilities.allocator import keep_freed_memory


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
def main(cfg: DictConfig) -> None:
    keep_freed_memory()
    bench_chosen_model_only(cfg, list(HydraConfig.get().overrides.task))
    output_dir = Path(cfg.paths.output_dir)
    if cfg.bench.peers:
        print(format_comparison(bench_peers(cfg)))
        print(f"bench: {output_dir / 'peers.json'}, {output_dir / 'peers.md'}")
        return
    result = bench(cfg)
    print(format_table(result))
    print(f"bench: {output_dir / 'bench.json'}, {output_dir / 'bench.md'}")


if __name__ == "__main__":
    main()
