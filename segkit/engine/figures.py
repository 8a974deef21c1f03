"""Figures of a model's results, drawn with matplotlib: the confusion matrix, the IoU of each class and a gallery of
image | truth | prediction with a legend of class colours (mmseg's `--show-dir`). segkit.eval saves them beside
metrics.json; `TensorBoardFigures` sends them to TensorBoard after each validation of a fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from segkit.data.palettes import IGNORE_COLOUR, ids_to_colours

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from segkit.data import SegmentationDataModule
    from segkit.data.datamodule import PadCollate, TransformedDataset
    from segkit.engine.module import SegmentationModule


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files and loggers only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(confmat: torch.Tensor | np.ndarray, class_names: Sequence[str]) -> Figure:
    """The C x C matrix of pixel counts (rows truth), each row as fractions of that class's pixels (its recall on the
    diagonal), the counts' share written in each cell."""
    plt = _pyplot()
    counts = np.asarray(confmat, dtype=np.float64)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class's pixels")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if len(class_names) <= 25:  # beyond that the numbers no longer fit their cells
        for row in ticks:
            for column in ticks:
                axes.text(column, row, f"{fractions[row, column]:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if fractions[row, column] > 0.5 else "black")
    axes.set_title(f"Confusion matrix ({int(counts.sum()):,} pixels)")
    figure.tight_layout()
    return figure


def iou_figure(iou_per_class: Mapping[str, float], miou: float, title: str = "IoU per class") -> Figure:
    """A horizontal bar per class, its IoU written beside it, and the mean IoU as a dashed line."""
    plt = _pyplot()
    names = list(iou_per_class)
    figure, axes = plt.subplots(figsize=(6, 1 + 0.35 * len(names)))
    bars = axes.barh(names, [iou_per_class[name] for name in names], color="tab:blue")
    axes.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    axes.axvline(miou, color="tab:red", linestyle="--", label=f"mIoU {miou:.3f}")
    axes.set_xlim(0, 1.1)
    axes.invert_yaxis()  # the first class on top
    axes.set_xlabel("IoU")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def legend_handles(class_names: Sequence[str], colormap: np.ndarray, with_ignored: bool = True) -> list:
    """One coloured patch per class (and the colour of ignored pixels), for a figure's legend. Patches are outlined
    in grey: a white class (Pets' border) would otherwise vanish on the white page."""
    from matplotlib.patches import Patch

    colours = [*colormap[: len(class_names)], *([IGNORE_COLOUR] if with_ignored else [])]
    labels = [*class_names, *(["ignored"] if with_ignored else [])]
    return [Patch(facecolor=np.asarray(colour) / 255, edgecolor="0.5", label=label)
            for label, colour in zip(labels, colours)]


def gallery_figure(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    class_names: Sequence[str],
    colormap: np.ndarray,
    ignore_index: int,
    titles: Sequence[str] | None = None,
) -> Figure:
    """One row per sample, image | truth | prediction (H x W x 3 uint8 images, H x W class ids), at each image's
    own aspect ratio, column titles on top and a legend of the class colours below."""
    plt = _pyplot()
    rows = len(images)
    height, width = images[0].shape[:2]
    panel = 3.0
    figure, axes = plt.subplots(rows, 3, figsize=(3 * panel, rows * panel * height / width + 0.8), squeeze=False)
    for row, (image, truth, prediction) in enumerate(zip(images, truths, predictions)):
        shown = (image, ids_to_colours(truth, colormap, ignore_index), ids_to_colours(prediction, colormap, ignore_index))
        for column, picture in enumerate(shown):
            axes[row, column].imshow(picture, interpolation="nearest")
            axes[row, column].set_axis_off()
        if titles:
            axes[row, 0].set_title(titles[row], fontsize=7, loc="left")
    for column, name in enumerate(("image", "truth", "prediction")):
        axes[0, column].annotate(name, (0.5, 1.02 if not titles else 1.12), xycoords="axes fraction", ha="center",
                                 va="bottom", fontsize=11, weight="bold")
    figure.legend(handles=legend_handles(class_names, colormap), loc="lower center", ncol=min(len(class_names) + 1, 6),
                  fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.6 / (rows * panel + 0.8) + 0.02, 1, 1))
    return figure


def legend_figure(class_names: Sequence[str], colormap: np.ndarray) -> Figure:
    """The class colours of masks and overlays, alone (legend.png beside segkit.predict's masks)."""
    plt = _pyplot()
    figure = plt.figure(figsize=(2.5, 0.3 * len(class_names) + 0.4))
    figure.legend(handles=legend_handles(class_names, colormap, with_ignored=False), loc="center", frameon=False)
    return figure


def close(figure: Figure) -> None:
    """Frees a figure that was not saved (one handed to a logger)."""
    _pyplot().close(figure)


def save(figure: Figure, path: Path) -> Path:
    """Writes `figure` as a PNG and frees it."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def stored_samples_with_predictions(module: SegmentationModule, dataset: TransformedDataset, collate: PadCollate,
                                    count: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The first `count` samples of `dataset` as its reader stores them (H x W x 3 uint8 images, H x W class ids),
    each with the module's predicted class ids at that size. The network sees each sample through the dataset's own
    pipeline, as the loop it pictures does, and its logits are resized back to the stored size (bilinear, as
    segkit.predict does): pictures show images at their own size and aspect ratio, not as the network was fed.
    With `module.test_time_augmentation` set the prediction averages its views, as segkit.eval scores it."""
    images, truths, predictions = [], [], []
    device = next(module.parameters(), torch.empty(0)).device
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        for index in range(min(count, len(dataset))):
            image, truth = dataset.samples[index]
            fed = dataset.pipeline(image=image, mask=truth)
            batch, _ = collate([(fed["image"], fed["mask"].long())])
            batch = batch.to(device)
            logits = module.predict_logits(batch)
            logits = logits[..., : fed["image"].shape[-2], : fed["image"].shape[-1]].float()
            logits = F.interpolate(logits, size=truth.shape[:2], mode="bilinear", align_corners=False)
            images.append(image)
            truths.append(truth)
            predictions.append(logits.argmax(1)[0].to(torch.uint8).cpu().numpy())
    module.train(was_training)
    return images, truths, predictions


def result_figures(confmat: torch.Tensor, iou_per_class: Mapping[str, float], miou: float,
                   samples: tuple[list, list, list] | None, datamodule: SegmentationDataModule,
                   class_names: Sequence[str]) -> dict[str, Figure]:
    """The confusion matrix, IoU chart and (with `samples`) the gallery, by file stem."""
    figures = {"confusion_matrix": confusion_matrix_figure(confmat, class_names),
               "iou_per_class": iou_figure(iou_per_class, miou)}
    if samples and samples[0]:
        figures["gallery"] = gallery_figure(*samples, class_names, datamodule.colormap, datamodule.ignore_index)
    return figures


def write_evaluation_figures(module: SegmentationModule, datamodule: SegmentationDataModule, iou_per_class:
                             Mapping[str, float], miou: float, show: int, output_dir: Path) -> list[Path]:
    """segkit.eval's figures after its test loop: confusion_matrix.png, iou_per_class.png and, with `show` > 0, a
    gallery.png of the split's first `show` samples."""
    if show < 0:
        raise ValueError(f"show={show}: expected the number of samples in gallery.png (0: none)")
    samples = (stored_samples_with_predictions(module, datamodule.test_set, datamodule.val_collate, show)
               if show else None)
    figures = result_figures(module.confusion_matrices["test"].cpu(), iou_per_class, miou, samples, datamodule,
                             module.class_names)
    return [save(figure, output_dir / f"{name}.png") for name, figure in figures.items()]
