"""Checks a composed config before anything is built, so that a wrong name or value fails in a second
with the key, the value and what was expected, not minutes into a run.

    validate(cfg)   # segkit.train calls it first; any entry point can (groups a config lacks are skipped)

Unknown options of a group (`model=foo`, `data=foo`) are Hydra's to report: it lists the valid ones.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import albumentations as A
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from segkit.checkpoints import CheckpointError, check_checkpoint_matches, check_resume_settings, read_trusted_checkpoint
from segkit.checkpoints.matching import FIXED_ON_RESUME
from segkit.config import CONFIG_DIR, to_plain
from segkit.data import FileDataModule, SegmentationDataModule
from segkit.data.files import check_on_bad_sample
from segkit.models import ENCODERS, without_pretrained_weights
from segkit.models.losses import check_class_weights
from segkit.runtime.tta import check_tta, check_tta_scales
from segkit.utilities.checks import ConfigError, require_int, require_number, require_positive
from segkit.utilities.extras import MissingExtraError, require

TRANSFORM_KEYS = ("train_transforms", "val_transforms")

# Targets of conf/ that work only with an optional dependency (an extra of the segkit package) installed.
TARGETS_NEEDING = {
    "lightning.pytorch.loggers.TensorBoardLogger": "tensorboard",
    "segkit.engine.loggers.wandb_logger": "wandb",
    "segkit.callbacks.WandbDashboard": "wandb",
}


def validate(cfg: DictConfig) -> None:
    """Raises a `ConfigError` for the first problem found in `cfg`: an unknown `_target_` anywhere (with
    close names), the data (class count, batch size, workers, root), the model (encoder, class count,
    image size it can take) and the optimizer (learning rate); a `ckpt_path` must fit the model."""
    transform_keys = tuple(f"data.{key}[" for key in TRANSFORM_KEYS)
    located = {key: _locate_target(key, target, transform=key.startswith(transform_keys))
               for key, target in _targets(cfg)}
    for key, target in _targets(cfg):
        if target in TARGETS_NEEDING:
            try:
                require(TARGETS_NEEDING[target])
            except MissingExtraError as error:
                raise ConfigError(f"{key}={target}: {error}") from None
    for group in ("callbacks", "logger"):
        _check_named_objects(group, cfg.get(group))
    data = cfg.get("data")
    if data is not None:
        _check_data(data, located.get("data._target_"))
    if cfg.get("model") is not None:
        _check_model(cfg.model, data)
    if cfg.get("optimizer") is not None:
        for key in ("lr", "encoder_lr_factor"):
            if key in cfg.optimizer:
                require_positive(f"optimizer.{key}", cfg.optimizer[key])
    if cfg.get("loss") is not None:
        _check_loss(cfg.loss, data)
    if cfg.get("trainer") is not None:
        _check_trainer(cfg.trainer)
    if cfg.get("scheduler"):
        _check_scheduler(cfg.scheduler)
    thresholds = OmegaConf.select(cfg, "metrics.time_to_miou")
    if thresholds is not None:
        if not isinstance(thresholds, ListConfig):
            raise ConfigError(f"metrics.time_to_miou={thresholds}: expected a list of mIoU values, e.g. [0.55, 0.6]")
        for index, threshold in enumerate(thresholds):
            require_number(f"metrics.time_to_miou[{index}]", threshold, 0, 1, low_open=True, what="an mIoU")
    check_tta(cfg.get("tta"))
    check_tta_scales(cfg.get("tta_scales"))
    if cfg.get("seed") is not None:
        require_int("seed", cfg.seed, minimum=0, maximum=2**32 - 1)  # the range numpy's seed takes
    if cfg.get("ckpt_path"):
        model = to_plain(cfg.model) if cfg.get("model") is not None else None
        try:
            # Resuming builds nothing from the checkpoint's config, but a file that names untrusted code is refused.
            checkpoint = read_trusted_checkpoint(cfg.ckpt_path, cfg.get("trusted_targets") or (), mmap=True)
            check_checkpoint_matches(cfg.ckpt_path, model, data.num_classes if data is not None else None, checkpoint)
            check_resume_settings(cfg.ckpt_path, {key: _resolved(cfg, key) for key in FIXED_ON_RESUME}, checkpoint)
        except CheckpointError as error:
            raise ConfigError(f"ckpt_path={error}") from error  # its message starts with the path


def _resolved(cfg: DictConfig, key: str) -> Any:
    """The value at `key` (dotted) as plain, resolved data; None where absent."""
    value = OmegaConf.select(cfg, key)
    return to_plain(value) if isinstance(value, DictConfig) else value


def _targets(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """(key, value) of every `_target_` in `cfg`, keys written as on the command line."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{path}[{index}]")
        elif path.endswith("._target_") or path == "_target_":
            yield path, OmegaConf.select(cfg, path)  # resolved, in case it is an interpolation

    # Unresolved: keys such as paths.output_dir resolve only inside a Hydra run.
    yield from walk(OmegaConf.to_container(cfg, resolve=False), "")


# What a pipeline step may be: a transform, or a composition of transforms (OneOf, SomeOf, Sequential).
PIPELINE_STEPS = (A.BasicTransform, A.BaseCompose)


def _transform_names() -> list[str]:
    return sorted(name for name, value in vars(A).items()
                  if isinstance(value, type) and issubclass(value, PIPELINE_STEPS) and not name.startswith("_"))


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _import_object(target: str) -> Any:
    """`hydra.utils.get_object(target)` (what `instantiate` imports `_target_` with), without the error line it
    logs when the import fails: the caller raises a `ConfigError` that names the key instead."""
    hydra_log = logging.getLogger("hydra.utils")
    quiet = _DropRecords()
    hydra_log.addFilter(quiet)
    try:
        return get_object(target)
    finally:
        hydra_log.removeFilter(quiet)


def _locate_target(key: str, target: Any, transform: bool) -> Any:
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{key}={target!r}: expected the dotted import path of a class or function")
    try:
        found = _import_object(target)
    except ImportError as error:
        module, _, name = target.rpartition(".")
        candidates = _transform_names() if transform else _public_names(module)
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
        if close:
            hint = f"close names: {', '.join(f'{module}.{c}' for c in close)}"
        elif transform:
            hint = f"albumentations transforms: {', '.join(candidates)}"
        else:
            hint = " ".join(str(error).split())
        raise ConfigError(f"{key}={target}: cannot be imported; {hint}") from None
    if transform and not (isinstance(found, type) and issubclass(found, PIPELINE_STEPS)):
        raise ConfigError(f"{key}={target}: expected an albumentations transform or composition (a subclass of "
                          f"A.BasicTransform or A.BaseCompose)")
    return found


def _public_names(module: str) -> list[str]:
    try:
        return [name for name in dir(_import_object(module)) if not name.startswith("_")] if module else []
    except ImportError:
        return []


def _group_options(group: str) -> str:
    return ", ".join(sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml")))


def _check_named_objects(group: str, entries: Any) -> None:
    """Every entry of callbacks or logger is an object's config or null (off). An entry without `_target_` is
    what an experiment's setting (`callbacks.ema.decay: 0.995`) leaves when `callbacks=default` drops its object."""
    for name, entry in (entries or {}).items():
        if entry is not None and not (isinstance(entry, DictConfig) and "_target_" in entry):
            value = OmegaConf.to_container(entry) if isinstance(entry, (DictConfig, ListConfig)) else entry
            raise ConfigError(f"{group}.{name}: expected an object's config with a _target_, or null to turn it off; "
                              f"got {value!r} (a setting whose object the chosen {group} config does not define?); "
                              f"{group} configs: {_group_options(group)}")


def _check_data(data: DictConfig, datamodule: Any) -> None:
    if datamodule is not None and not (isinstance(datamodule, type) and issubclass(datamodule, SegmentationDataModule)):
        raise ConfigError(
            f"data._target_={data._target_}: expected a SegmentationDataModule; choose data=<one of "
            f"{_group_options('data')}>, or subclass segkit.data.SegmentationDataModule"
        )
    if "on_bad_sample" in data:
        _reraise_as_config_error(check_on_bad_sample, data.on_bad_sample)
    if datamodule is not None:
        class_names = _reraise_as_config_error(datamodule.config_class_names, data)
        if data.get("num_classes") != len(class_names):
            raise ConfigError(
                f"data.num_classes={data.get('num_classes')}: {datamodule.__name__} has {len(class_names)} classes "
                f"{list(class_names)}; expected data.num_classes={len(class_names)} (or leave it at its default)"
            )
    require_int("data.batch_size", data.get("batch_size", 1), minimum=1)
    require_int("data.num_workers", data.get("num_workers", 0), minimum=0)
    if data.get("image_size") is not None:
        size = data.image_size
        if len(size) != 2 or not all(isinstance(side, int) and side >= 1 for side in size):
            raise ConfigError(f"data.image_size={list(size)}: expected [height, width], two positive integers")
    if isinstance(datamodule, type) and issubclass(datamodule, FileDataModule) and not data.get("download"):
        root = Path(data.root).expanduser()
        if not root.is_dir():
            raise ConfigError(
                f"data.root={data.root}: folder not found ({root.resolve()}); expected the folder that holds the "
                f"dataset in its official layout (README, Data), or data.download=true to fetch it there"
            )


def _check_model(model: DictConfig, data: DictConfig | None) -> None:
    encoder = model.get("encoder")
    if isinstance(encoder, Mapping) and encoder.get("name") not in ENCODERS:
        raise ConfigError(f"model.encoder.name={encoder.get('name')}: unknown encoder; valid names: "
                          f"{', '.join(sorted(ENCODERS))} (or choose model=<one of {_group_options('model')}>)")
    if data is not None and model.get("num_classes", data.num_classes) != data.num_classes:
        raise ConfigError(f"model.num_classes={model.num_classes}: expected data.num_classes={data.num_classes}, "
                          "the number of classes of the data (the default model.num_classes follows it)")
    # Built on the meta device: no memory, no weights, a few milliseconds; the model's own checks run.
    with torch.device("meta"):
        try:
            net = instantiate(without_pretrained_weights(to_plain(model)))
        except InstantiationException as error:
            cause = error.__cause__ or error
            raise ConfigError(f"model={model.get('name')} cannot be built from its config: {cause}") from None
    min_size = getattr(net, "min_size", 1)
    if data is not None and data.get("image_size") is not None and min(data.image_size) < min_size:
        raise ConfigError(
            f"data.image_size={list(data.image_size)}: too small for {model.get('name')}, whose "
            f"{min_size.bit_length() - 1} downsamplings need at least {min_size} x {min_size} pixels; expected "
            f"data.image_size of at least [{min_size},{min_size}]"
        )


def _check_trainer(trainer: DictConfig) -> None:
    max_epochs = require_int("trainer.max_epochs", trainer.get("max_epochs"), minimum=1,
                             hint=", the number of epochs (the cosine and poly schedules span it; for a time budget "
                             "set trainer.max_time=DD:HH:MM:SS as well)")
    if trainer.get("min_epochs") is not None:
        require_int("trainer.min_epochs", trainer.min_epochs, minimum=0, maximum=max_epochs)


# Scheduler arguments that count epochs: torch divides by them or steps by them.
SCHEDULER_EPOCH_KEYS = ("T_max", "total_iters", "step_size")


def _check_scheduler(scheduler: DictConfig) -> None:
    for key in SCHEDULER_EPOCH_KEYS:
        if key in scheduler:
            require_int(f"scheduler.{key}", scheduler[key], minimum=1)
    for key in ("gamma", "factor"):
        if key in scheduler:
            require_positive(f"scheduler.{key}", scheduler[key])


def _reraise_as_config_error(check: Any, *args: Any) -> Any:
    # The data code's own checks already name the key and the valid values.
    try:
        return check(*args)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_loss(loss: DictConfig, data: DictConfig | None) -> None:
    weights = loss.get("class_weights")
    check_class_weights(to_plain(weights) if isinstance(weights, ListConfig) else weights,
                        data.num_classes if data is not None else None, classes_key="data.num_classes")
    require_number("loss.label_smoothing", loss.get("label_smoothing", 0.0), 0, 1, high_open=True)
    for key in ("dice_weight", "lovasz_weight"):
        require_number(f"loss.{key}", loss.get(key, 0.0), 0)
