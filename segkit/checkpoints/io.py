"""Checkpoint files that survive crashes and load safely.

- `AtomicCheckpointIO` (the trainer's `plugins` in conf/trainer/default.yaml) writes each checkpoint to
  `<file>.tmp` beside it, fsyncs and renames it over the old file, so a run killed while saving keeps
  the previous checkpoint whole; a full disk is reported with the path and the free space.
- `read_checkpoint` loads with `torch.load(weights_only=True)`: plain data and tensors only, so a
  crafted file cannot run code; a corrupt or foreign file fails naming it and what is wrong with it.

A missing file is the same error everywhere: `CheckpointError("<path>: checkpoint not found")`.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from zipfile import is_zipfile

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

# A path as Lightning's checkpoint IO receives it (Lightning's own alias for it is private).
PathLike = str | os.PathLike[str]

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
