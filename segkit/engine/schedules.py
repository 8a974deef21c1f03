"""Learning-rate schedules that follow the run's whole budget: its steps or its time, whichever ends first.

torch's epoch schedulers (`CosineAnnealingLR(T_max=max_epochs)`) know nothing of `trainer.max_time`, so a
run stopped by its time budget ends half-way down the curve, at a high learning rate. `BudgetSchedule`
is stepped every optimizer step, and its position is the run's progress, set by the module before each
step from the trainer (`training_progress`).
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

SHAPES = ("cosine", "poly", "constant")


def training_progress(trainer: L.Trainer) -> float:
    """How much of the run is done, in [0, 1]: the larger of the optimizer steps taken over the steps that
    `max_epochs`/`max_steps` plan, and the training time spent over `max_time` (Lightning's Timer)."""
    fractions = [0.0]
    planned_steps = trainer.estimated_stepping_batches
    if math.isfinite(planned_steps) and planned_steps > 0:
        fractions.append(trainer.global_step / planned_steps)
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback.time_remaining() is not None:
            elapsed = callback.time_elapsed()
            fractions.append(elapsed / max(elapsed + callback.time_remaining(), 1e-9))
    return min(1.0, max(fractions))


class BudgetSchedule(LRScheduler):
    """Linear warm-up over the first `warmup` fraction of the run, then a decay to `min_factor` times the
    base lr at its end: `cosine`, `poly` ((1 - t)^power, the VOC/SBD recipes' shape) or `constant`."""

    def __init__(self, optimizer: Optimizer, shape: str = "cosine", warmup: float = 0.0, min_factor: float = 0.0,
                 power: float = 0.9) -> None:
        if shape not in SHAPES:
            raise ValueError(f"scheduler.shape={shape!r} is not a schedule shape; expected one of {list(SHAPES)}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"scheduler.warmup={warmup}: expected a fraction of the run in [0, 1)")
        if not 0.0 <= min_factor <= 1.0:
            raise ValueError(f"scheduler.min_factor={min_factor}: expected a factor in [0, 1]")
        self.shape, self.warmup, self.min_factor, self.power = shape, warmup, min_factor, power
        self.progress = 0.0
        super().__init__(optimizer)

    def factor(self, progress: float) -> float:
        """The multiple of the base lr at `progress` (0 at the start of the run, 1 at its end)."""
        if progress < self.warmup:
            # From a small fraction, not 0: the first step should move the weights.
            return max(progress / self.warmup, 0.01)
        decay = (progress - self.warmup) / (1.0 - self.warmup)
        if self.shape == "cosine":
            remaining = 0.5 * (1.0 + math.cos(math.pi * decay))
        elif self.shape == "poly":
            remaining = (1.0 - decay) ** self.power
        else:
            remaining = 1.0
        return self.min_factor + (1.0 - self.min_factor) * remaining

    def get_lr(self) -> list[float]:
        return [base_lr * self.factor(self.progress) for base_lr in self.base_lrs]
