"""The bench's results as text: a progress line per row and the markdown table of bench.md."""

from __future__ import annotations

from typing import Any


def progress_line(row: dict[str, Any]) -> str:
    return (f"{row['model']} [{row['option']}]: training {row['train_images_per_s']:.2f} images/s, plain loop "
            f"{row['plain_train_images_per_s']:.2f}, ratio {row['overhead_ratio']:.3f}; inference "
            f"{row['inference_images_per_s']:.2f} images/s, {row['latency_ms_batch1']:.1f} ms at batch 1")


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The rows as a markdown table, with the device and settings above it and the loader below."""
    settings = result["settings"]
    lines = [
        f"{result['device']}, torch {result['torch']}, {result['torch_threads']} threads; batch "
        f"{settings['batch_size']}, {'x'.join(map(str, settings['image_size']))}, median of {settings['repeats']} "
        f"repeats of {settings['steps']} steps after {settings['warmup']} warm-up",
        "",
        "| model | option | params | GMACs/image | train images/s | plain loop images/s | segkit/plain "
        "| inference images/s | train images/s per GMAC | inference images/s per GMAC | latency batch 1 (ms) "
        "| peak memory (MiB) | train MFU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        mfu = "n/a" if row["train_mfu"] is None else f"{row['train_mfu']:.1%}"
        lines.append(
            f"| {row['model']} | {row['option']} | {row['params']:,} | {row['macs'] / 1e9:.2f} "
            f"| {row['train_images_per_s']:.2f} | {row['plain_train_images_per_s']:.2f} | {row['overhead_ratio']:.3f} "
            f"| {row['inference_images_per_s']:.2f} | {row['train_images_per_s_per_gmac']:.1f} "
            f"| {row['inference_images_per_s_per_gmac']:.1f} | {row['latency_ms_batch1']:.1f} "
            f"| {_number(row['peak_memory_mib'], 0)} | {mfu} |"
        )
    lines.append("")
    if result["rows"]:
        lines.append(f"segkit/plain training images/s: lowest {result['overhead_ratio_min']:.3f} "
                     f"(peak memory: {result['rows'][0]['peak_memory_kind']})")
    loader = result["loader"]
    if loader is not None:
        line = (f"train loader ({loader['data']}, batch {loader['batch_size']}, {loader['num_workers']} workers, "
                f"pin_memory {loader['pin_memory']}, persistent_workers {loader['persistent_workers']}): "
                f"{loader['images_per_s']:.1f} images/s")
        if loader["over_fastest_training"] is not None:
            line += f", {loader['over_fastest_training']:.1f}x the fastest training above"
        lines.append(line)
    return "\n".join(lines)
