"""Training order and augmentation as a pure function of (seed, epoch), so a run resumed in the middle of
an epoch sees exactly the samples and augmentations that an uninterrupted run would have seen."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

# An epoch's seed stream starts here, far from the seed itself, so epoch e never repeats epoch e + 1.
_EPOCH_STRIDE = 1_000_003


class ResumableShuffle(Sampler[tuple[int, int]]):
    """Yields `(index, augmentation_seed)` pairs: a permutation of `range(size)` drawn from `seed` and the
    epoch, each index paired with a seed for its augmentations.

    Unlike `RandomSampler`, nothing depends on the global RNG or on which process draws it, so the
    number of DataLoader workers does not change what is trained on, and resuming needs no RNG
    state. `skip` drops the first samples of the next iteration only: the ones a resumed epoch had
    already trained on before the interruption.
    """

    def __init__(self, size: int, seed: int, epoch: int = 0, skip: int = 0) -> None:
        if not 0 <= skip <= size:
            raise ValueError(f"skip must be in [0, {size}], got {skip}")
        self.size = size
        self.seed = seed
        self.epoch = epoch
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed((self.seed * _EPOCH_STRIDE + self.epoch) % 2**64)
        order = torch.randperm(self.size, generator=generator).tolist()
        augmentation_seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=generator).tolist()
        skip, self.skip = self.skip, 0
        return iter(list(zip(order, augmentation_seeds))[skip:])
