"""Pictures of predictions: input | truth | prediction panels in the dataset's colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from segkit.data.palettes import ids_to_colours


def draw_panel(
    images: torch.Tensor,
    masks: torch.Tensor,
    predictions: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    colormap: np.ndarray,
    ignore_index: int,
) -> np.ndarray:
    """One row per sample, input | truth | prediction: an (N * H) x (3 * W) x 3 uint8 image.

    `images` are normalised N x 3 x H x W tensors (undone with `mean` and `std`, on the 0..1 scale);
    `masks` and `predictions` N x H x W class ids, drawn in `colormap` (ignored pixels in VOC's border
    colour).
    """
    pixels = images.detach().float().cpu().permute(0, 2, 3, 1) * torch.tensor(std) + torch.tensor(mean)
    inputs = (pixels * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    truths = ids_to_colours(masks.cpu().numpy(), colormap, ignore_index)
    predicted = ids_to_colours(predictions.cpu().numpy(), colormap, ignore_index)
    rows = np.concatenate([inputs, truths, predicted], axis=2)  # N x H x 3W x 3
    return rows.reshape(-1, *rows.shape[2:])
