"""The learning-rate range test (Lightning's `Tuner.lr_find`, fastai style) on a built run's model and data, its
curve read honestly, and its plot; writes lr_find.png and lr_find.json. Run by `segkit lr_find` and by
`segkit train lr_find=true` (find the lr, then train with it).

The lr grows exponentially from `lr_finder.min_lr` to `lr_finder.max_lr` over `lr_finder.num_training`
batches, or until the loss diverges. The model and optimizer are restored afterwards, so training starts from
the same weights whether or not the finder ran (docs/lr_find.md: how good the suggestion is).

Lightning's `Tuner.lr_find` keeps only an exponentially smoothed loss whose bias correction is one step off
(the first point is about half the first loss, so the curve starts with a climb that is not in the data), and
its suggestion is the steepest slope per unit of lr, which favours the smallest lrs of the range. Here
(`analyse`) the raw losses are recovered from that curve and smoothed again with a centred moving mean (no
start-up bias, no lag), and the suggestion is the steepest descent per decade of lr between the first steps and
the minimum of the smoothed loss; `plot` shows every step's loss, the smoothing, the suggestion and the points
the suggestion does not consider.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.tuner import Tuner

from segkit.engine.module import SegmentationModule

# The smoothing factor of Lightning's range test (and fastai's): each point is 2% of the new loss.
BETA = 0.98
# Steps averaged into each point of segkit's smoothed curve.
SMOOTHING_WINDOW = 9


@dataclass
class RangeTest:
    """One range test: per step its lr, raw and smoothed loss; the suggestion and what it skipped."""

    lr: list[float]
    loss: list[float | None]  # a diverged (non-finite) step is None, and so is every later one
    smoothed_loss: list[float | None]
    skip_begin: int  # the first steps, left out of the suggestion: the loss of a network barely trained yet is noise
    minimum_index: int | None  # the smoothed loss's minimum: the suggestion lies before it
    suggested_index: int | None

    @property
    def suggested_lr(self) -> float | None:
        return None if self.suggested_index is None else self.lr[self.suggested_index]

    @property
    def minimum_lr(self) -> float | None:
        return None if self.minimum_index is None else self.lr[self.minimum_index]

    def to_json(self) -> dict[str, Any]:
        return {"suggested_lr": self.suggested_lr, "minimum_loss_lr": self.minimum_lr, **asdict(self)}


def unsmooth(smoothed: Sequence[float], beta: float = BETA) -> list[float]:
    """The raw losses behind Lightning's smoothed curve, where point i (global step i + 1) is
    `avg_i / (1 - beta ** (i + 2))` with `avg_i = beta * avg_(i-1) + (1 - beta) * loss_i`. Stops at the first
    non-finite point: after it every average is NaN."""
    losses: list[float] = []
    previous = 0.0
    for index, value in enumerate(smoothed):
        if not math.isfinite(value):
            break
        average = value * (1 - beta ** (index + 2))
        losses.append((average - beta * previous) / (1 - beta))
        previous = average
    return losses


def smooth(losses: Sequence[float], window: int = SMOOTHING_WINDOW) -> list[float]:
    """The mean of the `window` steps centred on each step (fewer at the ends). Centred, the curve does not lag
    behind the losses: an exponential average of factor 0.98, as Lightning's, lags by about 50 steps, half of a
    100-step test, and so moves its steepest point and minimum to higher lrs."""
    values = np.asarray(losses, dtype=np.float64)
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(values)])
    starts = np.clip(np.arange(len(values)) - half, 0, None)
    ends = np.clip(np.arange(len(values)) + half + 1, None, len(values))
    return ((sums[ends] - sums[starts]) / (ends - starts)).tolist()


def analyse(lrs: Sequence[float], lightning_losses: Sequence[float], skip_begin: int = 10) -> RangeTest:
    """Reads the curve of Lightning's range test (`finder.results`: lr and smoothed loss per step)."""
    raw = unsmooth(lightning_losses)
    smoothed = smooth(raw)
    finite = len(raw)
    minimum = int(np.argmin(smoothed)) if smoothed else None
    suggested = None
    if minimum is not None and minimum - skip_begin >= 2:
        # Steepest descent per decade of lr, among the points after the warm-up and up to the minimum.
        window = slice(skip_begin, minimum + 1)
        slopes = np.gradient(np.asarray(smoothed[window]), np.log10(np.asarray(lrs[window])))
        suggested = skip_begin + int(np.argmin(slopes))
    padding = [None] * (len(lrs) - finite)
    return RangeTest(lr=list(lrs), loss=[*raw, *padding], smoothed_loss=[*smoothed, *padding], skip_begin=skip_begin,
                     minimum_index=minimum, suggested_index=suggested)


def plot(test: RangeTest, path: Path, title: str = "LR range test") -> None:
    """lr_find.png: every step's loss as a point, the smoothed curve, the regions the suggestion skips shaded and
    named, the suggestion and the minimum marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    steps = [index for index, loss in enumerate(test.loss) if loss is not None]
    lrs = [test.lr[index] for index in steps]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.scatter(lrs, [test.loss[index] for index in steps], s=8, color="0.6", label="loss of each step")
    axes.plot(lrs, [test.smoothed_loss[index] for index in steps], color="tab:blue",
              label=f"smoothed: mean of {SMOOTHING_WINDOW} steps, centred")
    axes.set_xscale("log")
    if steps and test.skip_begin > 0:
        end = test.lr[min(test.skip_begin, len(test.lr) - 1)]
        axes.axvspan(test.lr[0], end, color="0.85", zorder=0, label=f"skipped: first {test.skip_begin} steps")
    if test.minimum_index is not None:
        axes.axvspan(test.lr[test.minimum_index], test.lr[-1], color="mistyrose", zorder=0,
                     label="skipped: past the minimum")
    if test.suggested_lr is not None:
        axes.axvline(test.suggested_lr, color="tab:red", linestyle="--",
                     label=f"suggested lr {test.suggested_lr:.3g} (steepest descent)")
        axes.plot([test.suggested_lr], [test.smoothed_loss[test.suggested_index]], "o", color="tab:red")
    if test.minimum_lr is not None:
        axes.plot([test.minimum_lr], [test.smoothed_loss[test.minimum_index]], "v", color="black",
                  label=f"minimum at lr {test.minimum_lr:.3g}")
    if len(steps) < len(test.lr):
        axes.axvline(test.lr[len(steps)], color="black", linewidth=0.8, label="loss not finite from here")
    # The diverging tail can be 100x the start: the scale follows the start of the curve so its descent shows.
    finite = [loss for loss in test.loss if loss is not None]
    if finite:
        axes.set_ylim(min(finite) * 0.9, max(finite[: max(test.skip_begin, 1) * 2]) * 1.5)
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    no_suggestion = "no suggestion: too few steps before the minimum"
    axes.set_title(f"{title}: {'suggested lr ' + format(test.suggested_lr, '.3g') if test.suggested_lr else no_suggestion}")
    axes.legend(fontsize=8, loc="upper left")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def find_lr(trainer: L.Trainer, module: SegmentationModule, datamodule: L.LightningDataModule,
            settings: Mapping[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """Runs the range test on `module` and `datamodule` with `trainer`, and writes its plot and curve to `output_dir`.

    Returns what lr_find.json holds, or None when Lightning skips the test (`fast_dev_run`).
    """
    fit_loop = trainer.fit_loop
    max_epochs = fit_loop.max_epochs
    fit_loop.max_epochs = -1  # num_training steps, however many epochs of a small dataset they take
    try:
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=settings["min_lr"],
            max_lr=settings["max_lr"],
            num_training=settings["num_training"],
            early_stop_threshold=settings["early_stop_threshold"],
            update_attr=False,  # the lr lives in the optimizer config; the caller applies it
        )
    finally:
        fit_loop.max_epochs = max_epochs
    if finder is None:
        return None
    # The test's batches went through the metric collections; they must not count in epoch 0.
    for metrics in (module.train_metrics, module.val_metrics):
        metrics.reset()
    test = analyse(finder.results["lr"], finder.results["loss"], skip_begin=settings["skip_begin"])
    result = {
        "min_lr": settings["min_lr"],
        "max_lr": settings["max_lr"],
        "num_training": settings["num_training"],
        "steps_run": len(finder.results["lr"]),
        **test.to_json(),  # suggested_lr, lr, loss (raw), smoothed_loss and what the suggestion skipped
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(test, output_dir / "lr_find.png")
    return result
