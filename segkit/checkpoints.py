"""Checkpoints that survive crashes and load safely.

- `AtomicCheckpointIO` (the trainer's `plugins` in conf/trainer/default.yaml) writes each checkpoint to
  `<file>.tmp` beside it, fsyncs and renames it over the old file, so a run killed while saving keeps
  the previous checkpoint whole; a full disk is reported with the path and the free space.
- `read_checkpoint` loads with `torch.load(weights_only=True)`: plain data and tensors only, so a
  crafted file cannot run code; a corrupt or foreign file fails naming it and what is wrong with it.
- `read_trusted_checkpoint` also refuses a checkpoint whose config names anything segkit would not build
  (`segkit.trust`): every caller that builds objects from a checkpoint's config reads it so.
- `check_checkpoint_matches` tells, before any weight is copied, that a checkpoint was trained for
  another network or number of classes than the config asks for; `check_resume_settings` that a resumed
  run would change what its checkpoint fixes.
- `read_training_config` and `training_datamodule`: `segkit.train` stores the run's resolved config in every
  checkpoint (`checkpoint[CONFIG_KEY]`, plain containers only), so eval, predict and export need nothing but
  the file: the model, its data, classes, palette and input normalisation all come from it.

A missing file is the same error everywhere: `CheckpointError("<path>: checkpoint not found")`.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from zipfile import is_zipfile

import torch
from fsspec.implementations.local import LocalFileSystem
from hydra.utils import instantiate
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from segkit.data import SegmentationDataModule
from segkit.models import without_pretrained_weights
from segkit.trust import untrusted_entries

if TYPE_CHECKING:  # for annotations only: segkit.module reads checkpoints through this module
    from segkit.module import SegmentationModule

# A path as Lightning's checkpoint IO receives it (Lightning's own alias for it is private).
PathLike = str | os.PathLike[str]

# Where a checkpoint keeps the resolved training config of the run that wrote it.
CONFIG_KEY = "segkit_config"

# Words of the lines of torch's loading errors that advise loading unsafely or filing an issue.
TORCH_ADVICE = ("weights_only", "file an issue", "Check the documentation")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded or does not fit the config; the message names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with crash-safe local saves and `weights_only=True` loads.

    Lightning's own save goes through an fsspec transaction, which for local files writes a temporary
    file in the system temp folder and moves it over the target: a copy, not an atomic rename, when the
    two are on different filesystems, and never fsynced.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # object stores replace whole objects
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: PathLike,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # None, Lightning's default, means True here: code in a checkpoint never runs unless asked for.
        if weights_only is False or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return read_checkpoint(path, map_location=map_location)


class _WriteErrorKeeper:
    """A file's `write` that keeps the OSError it raised: torch's zip writer turns a failed write into
    `RuntimeError: ... unexpected pos`, which no longer says that the disk is full."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def save_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    """`torch.save(checkpoint, path)` that either replaces `path` whole or leaves it as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    writer: _WriteErrorKeeper | None = None
    try:
        with open(temporary, "wb") as file:
            writer = _WriteErrorKeeper(file)
            torch.save(checkpoint, writer)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as raised:
        temporary.unlink(missing_ok=True)
        error = writer.error if writer is not None and writer.error is not None else raised
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise OSError(
                error.errno,
                f"no space left on the device while saving checkpoint {path}: {free / 2**20:.1f} MiB free in "
                f"{path.parent}. The previous checkpoint there is unchanged; free some space (or set "
                "paths.log_dir to another disk) and resume with ckpt_path=<its last.ckpt>",
            ) from raised
        raise
    # The rename is durable only once the folder's entry is written too.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_checkpoint(path: PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint loaded with `torch.load(weights_only=True)`, with errors that name the file: the one
    reader of checkpoint files. A caller that builds anything from its config reads it with
    `read_trusted_checkpoint` instead.

    `mmap=True` leaves the tensors on disk, for callers that only read the small entries around them.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: an empty file (0 bytes), not a checkpoint; was its saving cut off?")
    try:
        # torch maps only its zip format; any other file is read whole, so its own error can name what it is.
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zipfile(path))
    except pickle.UnpicklingError as error:
        # torch's message advises loading with weights_only=False, the unsafe way: only its findings are kept.
        findings = [line.strip() for line in str(error).splitlines()
                    if line.strip() and not any(word in line for word in TORCH_ADVICE)]
        refused = next((line for line in findings if "GLOBAL" in line), None)
        if refused is None:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({size} bytes that torch.save did not write: "
                                  f"{' '.join(findings) or error})") from error
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects other than tensors and plain data, which "
            f"would run code while unpickling ({refused}). segkit checkpoints never do; use one written "
            "by segkit, or load this one yourself only if you trust its source"
        ) from error
    except (RuntimeError, EOFError, KeyError, ValueError) as error:
        first_sentence = str(error).split(". ")[0]  # torch's finding; its advice follows
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({size} bytes), truncated or corrupt "
                              f"({type(error).__name__}: {first_sentence})") from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dictionary, found a {type(checkpoint).__name__}")
    return checkpoint


def read_trusted_checkpoint(path: PathLike, trusted_targets: Iterable[str] | str = (), mmap: bool = False
                            ) -> dict[str, Any]:
    """`read_checkpoint`, refused before anything is built when the checkpoint names a target that is
    neither segkit's own nor in `trusted_targets`, or holds anything else Hydra or Lightning would act on
    (`segkit.trust`). For every caller that builds objects from a checkpoint's config."""
    checkpoint = read_checkpoint(path, mmap=mmap)
    untrusted = untrusted_entries(checkpoint, trusted_targets)
    if untrusted:
        raise CheckpointError(
            f"{path}: refusing to build from this checkpoint: {'; '.join(untrusted)}. segkit's checkpoints name only "
            "segkit's own targets (segkit.trust.SEGKIT_TARGETS); for a checkpoint of your own model whose code you "
            "trust, list its targets in trusted_targets=[...]"
        )
    return checkpoint


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _architecture(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a model config that shape its weights: not the label `name`, not the initial weights."""
    flat = _flatten(without_pretrained_weights(model_config))
    return {key: value for key, value in flat.items() if key not in ("name", "encoder.weights", "num_classes")}


def check_checkpoint_matches(
    path: PathLike,
    model_config: Mapping[str, Any] | None,
    num_classes: int | None,
    checkpoint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Raises a `CheckpointError` when the SegmentationModule checkpoint at `path` was trained for another
    network (`model_config`, a `conf/model` config) or number of classes; returns its hyperparameters.

    `checkpoint` is the loaded file, if the caller has it already; `None` for either expectation skips it.
    """
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "num_classes" not in hparams:
        raise CheckpointError(
            f"{path}: not a segkit SegmentationModule checkpoint (no hyper_parameters with num_classes; "
            f"top-level keys: {sorted(checkpoint)[:10]})"
        )
    stored_net = hparams.get("net") if isinstance(hparams.get("net"), Mapping) else None
    differences = []
    if num_classes is not None and hparams["num_classes"] != num_classes:
        differences.append(f"data.num_classes (checkpoint {hparams['num_classes']}, config {num_classes})")
    if model_config is not None and stored_net is not None:
        ours, theirs = _architecture(model_config), _architecture(stored_net)
        differences += [
            f"model.{key} (checkpoint {theirs.get(key, '<absent>')!r}, config {ours.get(key, '<absent>')!r})"
            for key in sorted(set(ours) | set(theirs))
            if ours.get(key) != theirs.get(key)
        ]
    if differences:
        stored_name = stored_net.get("name", "?") if stored_net else "a network given as a module"
        wanted_name = model_config.get("name", "?") if model_config else "its model"
        wanted_classes = num_classes if num_classes is not None else "any number of"
        raise CheckpointError(
            f"{path}: the checkpoint holds {stored_name} with {hparams['num_classes']} classes, but the config asks "
            f"for {wanted_name} with {wanted_classes} classes; they differ in {', '.join(differences)}. "
            "Choose the model and data the checkpoint was trained with (its config.yaml is in the run folder), "
            "or another checkpoint"
        )
    return dict(hparams)


# Settings a resumed run takes from its checkpoint whatever the config says, so a changed value would not run:
# the restored optimizer and scheduler states carry their lr, momentum and schedule (T_max, milestones), the
# restored weights the loss's class weights; the seed, batch size and training-set size decide which samples
# of the interrupted epoch are already trained. (The model and class count: `check_checkpoint_matches`.)
FIXED_ON_RESUME = ("optimizer", "scheduler", "loss", "seed", "data.batch_size", "data.num_train")


def check_resume_settings(path: PathLike, settings: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> None:
    """Raises a `CheckpointError` naming each setting that a resumed run would change from the run that wrote
    `checkpoint`: `settings` maps each key of `FIXED_ON_RESUME` to its resolved value in the new config.
    Checkpoints without their training config pass."""
    stored = checkpoint.get(CONFIG_KEY)
    if not isinstance(stored, Mapping):
        return
    ours, theirs = _flatten(settings), _flatten(stored)
    changed = [f"{key} (checkpoint {theirs.get(key, '<absent>')!r}, config {ours.get(key, '<absent>')!r})"
               for key in sorted(set(ours) | set(theirs))
               if any(key == fixed or key.startswith(f"{fixed}.") for fixed in FIXED_ON_RESUME)
               and ours.get(key) != theirs.get(key)
               # A setting that the checkpoint's segkit version did not have yet cannot be compared.
               and key in theirs]
    if changed:
        raise CheckpointError(
            f"{path}: resuming cannot change {', '.join(changed)}: the run continues with the optimizer, scheduler "
            "and loss state of the checkpoint and its place in the epoch. Resume with the checkpoint's values (its "
            "run's config.yaml), or start a new run for new settings"
        )


def require_training_config(config: dict[str, Any] | None, path: str | Path) -> dict[str, Any]:
    """`config`, the training config read from the checkpoint at `path`; a `CheckpointError` when it has none."""
    if config is None:
        raise CheckpointError(
            f"{path}: the checkpoint carries no training config ({CONFIG_KEY!r}); it was written by a segkit "
            f"older than segkit.eval and segkit.predict, or not by segkit.train. Retrain, or use "
            f"SegmentationModule.load_from_checkpoint with a datamodule built from the training config"
        )
    return config


def read_training_config(ckpt_path: str | Path, trusted_targets: Iterable[str] = ()) -> dict[str, Any]:
    """The resolved training config stored in a checkpoint, read without loading its weights into memory and
    refused (`CheckpointError`) if it names targets outside segkit's and `trusted_targets` (`segkit.trust`)."""
    config = read_trusted_checkpoint(ckpt_path, trusted_targets, mmap=True).get(CONFIG_KEY)
    return require_training_config(config, ckpt_path)


def training_datamodule(module: SegmentationModule, **overrides: Any) -> SegmentationDataModule:
    """The datamodule of a trained module's training config, with `overrides` of its keys (root=..., split=...),
    built but not set up (no file is read), normalising as training did."""
    data = instantiate({**module.segkit_config["data"], **overrides})
    data.use_normalisation_of(module.net)
    return data
