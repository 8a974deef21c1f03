"""`data=shapes`: a synthetic, seeded stand-in for Oxford-IIIT Pet trimaps, generated on the fly.

Each image holds 1-3 blob-shaped objects on a background. Classes follow the Pets trimap order after
conversion to ids: 0 object, 1 background, 2 border (a thin band around every object's contour).
Colour alone says nothing about the class: every image draws its own palette, and objects and
background paint with colours from it, one colour always shared. What separates them is texture
(objects are finely striped, the background varies slowly), so a network has to look at neighbourhoods,
as it must for real pets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from torch.utils.data import Dataset

from segkit.data.datamodule import SegmentationDataModule
from segkit.data.palettes import TRIMAP_COLORMAP

SHAPES_CLASS_NAMES = ("object", "background", "border")
OBJECT, BACKGROUND, BORDER = range(3)


class ShapesDataset(Dataset):
    """`num_samples` (image, mask) pairs; sample i is the same for a given seed, whatever the order read.

    Images are H x W x 3 uint8, masks H x W uint8 class ids.
    """

    def __init__(
        self,
        num_samples: int,
        image_size: Sequence[int] = (64, 64),
        seed: int = 0,
        max_objects: int = 3,
        border_width: int = 2,
        noise_std: float = 8.0,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if len(image_size) != 2 or min(image_size) < 16:
            raise ValueError(f"image_size must be [height, width] with both >= 16, got {list(image_size)}")
        self.num_samples = num_samples
        self.height, self.width = (int(v) for v in image_size)
        self.seed = seed
        self.max_objects = max_objects
        self.border_width = border_width
        self.noise_std = noise_std
        self._rows, self._cols = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index])
        palette = rng.uniform(0, 255, size=(4, 3)).astype(np.float32)
        shared, background_only, object_only = palette[0], palette[1], palette[2]

        image = self._blend(self._smooth_noise(rng), shared, background_only)
        objects = np.zeros((self.height, self.width), dtype=bool)
        for _ in range(rng.integers(1, self.max_objects + 1)):
            blob = self._blob(rng)
            image[blob] = self._blend(self._stripes(rng), shared, object_only)[blob]
            objects |= blob

        mask = np.where(objects, OBJECT, BACKGROUND).astype(np.uint8)
        contour = ndimage.binary_dilation(objects, iterations=self.border_width) & ~ndimage.binary_erosion(
            objects, iterations=self.border_width, border_value=1
        )
        mask[contour] = BORDER
        image += rng.normal(0, self.noise_std, size=image.shape).astype(np.float32)
        return np.clip(image, 0, 255).astype(np.uint8), mask

    @staticmethod
    def _blend(weight: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return weight[..., None] * first + (1 - weight[..., None]) * second

    def _smooth_noise(self, rng: np.random.Generator) -> np.ndarray:
        """Slowly varying weights in [0, 1]: a coarse random grid, upsampled."""
        coarse = rng.uniform(0, 1, size=(5, 5)).astype(np.float32)
        zoom = (self.height / 5, self.width / 5)
        return np.clip(ndimage.zoom(coarse, zoom, order=1)[: self.height, : self.width], 0, 1)

    def _stripes(self, rng: np.random.Generator) -> np.ndarray:
        """Fine stripes of random orientation and a 4-6 pixel period, as 0/1 weights."""
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 6)
        phase = self._cols * np.cos(angle) + self._rows * np.sin(angle)
        return (np.sin(2 * np.pi * phase / period) > 0).astype(np.float32)

    def _blob(self, rng: np.random.Generator) -> np.ndarray:
        """A star-shaped blob: radius r(theta) = R * (1 + sum_k a_k cos(k theta + phi_k))."""
        size = min(self.height, self.width)
        radius = rng.uniform(0.15, 0.3) * size
        centre_row = rng.uniform(radius, self.height - radius)
        centre_col = rng.uniform(radius, self.width - radius)
        theta = np.arctan2(self._rows - centre_row, self._cols - centre_col)
        boundary = np.ones_like(theta)
        for k in (2, 3, 5):
            boundary += rng.uniform(0, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        distance = np.hypot(self._rows - centre_row, self._cols - centre_col)
        return distance <= radius * boundary


class ShapesDataModule(SegmentationDataModule):
    """Built-in synthetic data with Pets' three trimap classes; see `segkit.data.shapes`."""

    class_names = SHAPES_CLASS_NAMES
    colormap = TRIMAP_COLORMAP

    def __init__(
        self,
        num_train: int = 1500,
        num_val: int = 200,
        image_size: Sequence[int] = (48, 48),
        seed: int = 0,
        border_width: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = tuple(image_size)
        self.split_sizes = {"train": num_train, "val": num_val}
        self.seed = seed
        self.border_width = border_width

    def build_split(self, split: str) -> Dataset:
        # Different seeds per split so validation images are never training images.
        split_seed = self.seed * 2 + (split == "val")
        return ShapesDataset(self.split_sizes[split], self.image_size, split_seed, border_width=self.border_width)
