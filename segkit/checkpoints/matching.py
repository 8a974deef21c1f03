"""Whether a checkpoint fits what is asked of it, before any weight is copied: `check_checkpoint_matches` tells
that it was trained for another network or number of classes than the config asks for, `check_resume_settings`
that a resumed run would change what its checkpoint fixes. `segkit train` stores the run's resolved config in
every checkpoint (`checkpoint[CONFIG_KEY]`, plain containers only), so eval, predict and export need nothing
but the file; `read_training_config` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from segkit.checkpoints.io import CheckpointError, PathLike, read_checkpoint
from segkit.checkpoints.trust import read_trusted_checkpoint
from segkit.models import without_pretrained_weights

# Where a checkpoint keeps the resolved training config of the run that wrote it.
CONFIG_KEY = "segkit_config"


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
    refused (`CheckpointError`) if it names targets outside segkit's and `trusted_targets` (`segkit.checkpoints.trust`)."""
    config = read_trusted_checkpoint(ckpt_path, trusted_targets, mmap=True).get(CONFIG_KEY)
    return require_training_config(config, ckpt_path)
