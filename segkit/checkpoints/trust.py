"""A checkpoint is data, never code: `read_trusted_checkpoint` refuses one that would make segkit run code.

`segkit.checkpoints.read_checkpoint` loads a file with `torch.load(weights_only=True)`, so unpickling
yields tensors and plain containers only. But segkit then builds objects that the checkpoint's config
names: the network (`hyper_parameters.net`) when a module is rebuilt, the datamodule and its transforms
(`segkit_config.data`) in eval and predict; Hydra imports and calls any `_target_`, and Lightning any
`_instantiator` in the hyperparameters. So every value of a checkpoint, at any depth, is checked first
(`untrusted_entries`):

- every `_target_` is one of `SEGKIT_TARGETS` (the targets of segkit's own conf/, which are the only ones
  its checkpoints hold) or one the user lists in `trusted_targets`. Exact names, not module prefixes:
  `albumentations.*` would let in its transforms that read image files named in their arguments;
- no `_instantiator` key: segkit never writes one;
- no `${...}` interpolation and no `defaults` list: segkit stores configs composed and resolved, and a
  resolver or a defaults list would read environment variables, other keys or other configs;
- no ModelCheckpoint state naming files outside its own folder, which the callback would delete or load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segkit.checkpoints.io import CheckpointError, PathLike, read_checkpoint

log = logging.getLogger(__name__)

# Every `_target_` that a training config composed from conf/ can hold (tests/checkpoints/test_trust.py composes
# each option of each group and checks that this set is exactly what they hold).
SEGKIT_TARGETS = frozenset({
    # What segkit builds from a checkpoint: network, datamodules, their transforms, optimizers, schedulers.
    "segkit.models.build_model",
    "segkit.data.FolderDataModule",
    "segkit.data.PetsDataModule",
    "segkit.data.SBDDataModule",
    "segkit.data.ShapesDataModule",
    "segkit.data.VOCAugDataModule",
    "segkit.data.VOCDataModule",
    "albumentations.ColorJitter",
    "albumentations.HorizontalFlip",
    "albumentations.PadIfNeeded",
    "albumentations.RandomBrightnessContrast",
    "albumentations.RandomCrop",
    "albumentations.RandomResizedCrop",
    "albumentations.RandomScale",
    "albumentations.Resize",
    "albumentations.VerticalFlip",
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.SGD",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.PolynomialLR",
    "torch.optim.lr_scheduler.ReduceLROnPlateau",
    "torch.optim.lr_scheduler.StepLR",
    "segkit.engine.schedules.BudgetSchedule",
    # What the stored training config also names, though segkit never builds it from a checkpoint.
    "lightning.pytorch.Trainer",
    "lightning.pytorch.callbacks.EarlyStopping",
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.RichProgressBar",
    "lightning.pytorch.loggers.TensorBoardLogger",
    "segkit.callbacks.EpochLog",
    "segkit.callbacks.ForeachEMA",
    "segkit.callbacks.LastCheckpoint",
    "segkit.callbacks.ModelSummary",
    "segkit.callbacks.RecomputeBatchNormStats",
    "segkit.callbacks.StopOnNonFinite",
    "segkit.callbacks.TensorBoardFigures",
    "segkit.callbacks.WandbDashboard",
    "segkit.checkpoints.AtomicCheckpointIO",
    "segkit.engine.distributed.HydraDDPStrategy",
    "segkit.engine.loggers.ResumableCSVLogger",
    "segkit.engine.loggers.wandb_logger",
})
# Targets that the configs stored by earlier segkit versions name and conf/ no longer does, so that their
# checkpoints keep loading; segkit never builds them from a checkpoint.
RETIRED_TARGETS = frozenset({
    "lightning.pytorch.callbacks.EMAWeightAveraging",  # callbacks=ema before segkit.callbacks.ForeachEMA
    "lightning.pytorch.callbacks.RichModelSummary",
    "lightning.pytorch.loggers.CSVLogger",
    "segkit.callbacks.StopOnNonFiniteLoss",
    # Moved into segkit.callbacks and segkit.loggers.
    "segkit.dashboard.WandbDashboard",
    "segkit.dashboard.wandb_logger",
    "segkit.resume.LastCheckpoint",
    "segkit.resume.ResumableCSVLogger",
    # Moved into segkit.engine when segkit/ became a top level of commands over packages.
    "segkit.distributed.HydraDDPStrategy",
    "segkit.loggers.ResumableCSVLogger",
    "segkit.loggers.wandb_logger",
    "segkit.schedules.BudgetSchedule",
})

# The files a ModelCheckpoint callback's state names, besides the keys of its `best_k_models`.
MODEL_CHECKPOINT_FILES = ("best_model_path", "kth_best_model_path", "last_model_path")


def untrusted_entries(data: Any, trusted_targets: Iterable[str] | str = ()) -> list[str]:
    """`<key path>: <what>` for every entry of `data` (a loaded checkpoint) that would make segkit import or
    call something outside `SEGKIT_TARGETS` and `trusted_targets`, or resolve anything; empty if none.

    Extra targets that `data` names are logged as a warning, since they run code a user chose to trust.
    """
    extra = {trusted_targets} if isinstance(trusted_targets, str) else set(trusted_targets)  # one, or a list
    extra -= SEGKIT_TARGETS | RETIRED_TARGETS
    entries, trusted_extra = [], set()
    for path, key, value in _entries(data, ""):
        if key == "_target_":
            if isinstance(value, str) and value in SEGKIT_TARGETS | RETIRED_TARGETS:
                continue
            if isinstance(value, str) and value in extra:
                trusted_extra.add(value)
                continue
            entries.append(f"{path}: {value!r}, not a target segkit builds")
        elif key == "_instantiator":
            entries.append(f"{path}: {value!r}, an instantiator that Lightning would import and call")
        elif key == "defaults":
            entries.append(f"{path}: a Hydra defaults list, which would compose other configs")
        elif isinstance(value, str) and "${" in value:
            entries.append(f"{path}: {value!r}, an interpolation that would be resolved")
    if isinstance(data, dict) and isinstance(data.get("callbacks"), dict):
        entries += [entry for name, state in data["callbacks"].items() if isinstance(state, dict)
                    for entry in _files_outside_folder(state, f"callbacks.{name}")]
    if trusted_extra:
        log.warning("building targets from outside segkit because trusted_targets lists them: %s",
                    sorted(trusted_extra))
    return entries


def _files_outside_folder(state: dict, path: str) -> Iterator[str]:
    """The checkpoint files a ModelCheckpoint state names outside its `dirpath`: resuming into that folder
    restores them, and the callback would later delete (its top-k) or load (the best) each one."""
    folder = state.get("dirpath")
    files = [*(state.get(key) for key in MODEL_CHECKPOINT_FILES), *(state.get("best_k_models") or {})]
    for file in files:
        if file and (not isinstance(file, str) or folder is None or Path(file).parent != Path(folder)):
            yield f"{path}: {file!r}, a checkpoint file outside the callback's folder {folder!r}"


def _entries(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(key path, key, value) of every entry below `node`, dictionaries and lists at any depth."""
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = node.items()
        paths = [f"{path}.{key}" if path else str(key) for key in node]
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
        paths = [f"{path}[{index}]" for index in range(len(node))]
    else:
        return
    for child_path, (key, value) in zip(paths, items):
        yield child_path, key, value
        yield from _entries(value, child_path)


def read_trusted_checkpoint(path: PathLike, trusted_targets: Iterable[str] | str = (), mmap: bool = False
                            ) -> dict[str, Any]:
    """`read_checkpoint`, refused before anything is built when the checkpoint names a target that is
    neither segkit's own nor in `trusted_targets`, or holds anything else Hydra or Lightning would act on
    (`untrusted_entries`). For every caller that builds objects from a checkpoint's config."""
    checkpoint = read_checkpoint(path, mmap=mmap)
    untrusted = untrusted_entries(checkpoint, trusted_targets)
    if untrusted:
        raise CheckpointError(
            f"{path}: refusing to build from this checkpoint: {'; '.join(untrusted)}. segkit's checkpoints name only "
            "segkit's own targets (segkit.checkpoints.trust.SEGKIT_TARGETS); for a checkpoint of your own model whose code you "
            "trust, list its targets in trusted_targets=[...]"
        )
    return checkpoint
