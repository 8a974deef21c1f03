"""Checkpoints that survive crashes and load safely.

- `AtomicCheckpointIO` (the trainer's `plugins` in conf/trainer/default.yaml) writes each checkpoint to
  `<file>.tmp` beside it, fsyncs and renames it over the old file, so a run killed while saving keeps
  the previous checkpoint whole; a full disk is reported with the path and the free space.
- `read_checkpoint` loads with `torch.load(weights_only=True)`: plain data and tensors only, so a
  crafted file cannot run code; a corrupt or foreign file fails naming it.
- `check_checkpoint_matches` tells, before any weight is copied, that a checkpoint was trained for
  another network or number of classes than the config asks for.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from segkit.models import without_pretrained_weights


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded or does not fit the config; the message names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with crash-safe local saves and `weights_only=True` loads.

    Lightning's own save goes through an fsspec transaction, which for local files writes a temporary
    file in the system temp folder and moves it over the target: a copy, not an atomic rename, when the
    two are on different filesystems, and never fsynced.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # object stores replace whole objects
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: _PATH,
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


def read_checkpoint(path: _PATH, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint loaded with `torch.load(weights_only=True)`, with errors that name the file.

    `mmap=True` leaves the tensors on disk, for callers that only read the small entries around them.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
        refused = next((line for line in str(error).splitlines() if "GLOBAL" in line), str(error).splitlines()[0])
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects other than tensors and plain data, which "
            f"would run code while unpickling ({refused.strip()}). segkit checkpoints never do; use one written "
            "by segkit, or load this one yourself only if you trust its source"
        ) from error
    except (RuntimeError, EOFError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dictionary, found a {type(checkpoint).__name__}")
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
    path: _PATH,
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
