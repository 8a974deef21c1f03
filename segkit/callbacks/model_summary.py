"""`ModelSummary`: Lightning's model summary, logged, without the metric modules and the FLOPs column."""

from __future__ import annotations

import logging

import lightning as L
import torchmetrics
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count, summarize

log = logging.getLogger(__name__)


class ModelSummary(LightningModelSummary):
    """Lightning's model summary, logged (so the log file has it too), without the metric modules (they hold no
    weights) and without FLOPs, which Lightning counts only for a module with an `example_input_array` and
    otherwise prints as 0 (segkit puts MACs at the training size in metrics.json). Written here because
    Lightning's summary callbacks print every module and the FLOPs column whatever they are given."""

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)
        self.depth = max_depth

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.depth and trainer.is_global_zero:
            log.info("\n%s", summary_table(pl_module, self.depth))


def summary_table(module: L.LightningModule, max_depth: int) -> str:
    """Name, type and parameters of `module`'s layers down to `max_depth`, metrics left out, and the totals."""
    summary = summarize(module, max_depth=max_depth)
    metrics = tuple(name for name, child in module.named_modules() if isinstance(child, torchmetrics.Metric))
    rows = [(name, kind, get_human_readable_count(count).strip()) for name, kind, count
            in zip(summary.layer_names, summary.layer_types, summary.param_nums)
            if not name.startswith(metrics) and kind != "MetricCollection"]
    header = ("Name", "Type", "Params")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    lines = ["  ".join(value.ljust(width) if column < 2 else value.rjust(width)
                       for column, (value, width) in enumerate(zip(row, widths))) for row in [header, *rows]]
    trainable = summary.trainable_parameters
    frozen = summary.total_parameters - trainable
    lines.append(f"{get_human_readable_count(trainable).strip()} trainable parameters, "
                 f"{get_human_readable_count(frozen).strip()} frozen, {summary.model_size:.1f} MB")
    return "\n".join(lines)
