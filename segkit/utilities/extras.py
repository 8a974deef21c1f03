"""segkit's optional integrations, installed as extras of the package (pyproject.toml): `require` imports one, or
fails with the `pip install 'segkit[<extra>]'` line that installs it. Standard library only, so that
`segkit.runtime` can use it without torch."""

from __future__ import annotations

import importlib
from types import ModuleType

# The top-level module of each optional dependency -> the extra that installs it.
EXTRAS = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "onnxconverter_common": "export",
    "hydra_plugins.hydra_optuna_sweeper": "sweeps",
    "hydra_plugins.hydra_submitit_launcher": "sweeps",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency that is not installed; the message says which extra installs it."""


def _dependency(module: str) -> str:
    """The key of `EXTRAS` that `module` (a dotted name) belongs to."""
    for name in EXTRAS:
        if module == name or module.startswith(f"{name}."):
            return name
    raise KeyError(f"{module!r} is not an optional dependency of segkit; optional: {sorted(EXTRAS)}")


def extra_of(module: str) -> str:
    """The extra that installs `module` (a dotted name whose start is a key of `EXTRAS`)."""
    return EXTRAS[_dependency(module)]


def require(module: str, purpose: str | None = None) -> ModuleType:
    """`importlib.import_module(module)`, or a `MissingExtraError` naming the pip line that installs it."""
    dependency = _dependency(module)
    extra = EXTRAS[dependency]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        needed_by = f"{purpose} needs" if purpose else "segkit needs"
        raise MissingExtraError(
            f"{needed_by} {dependency}, which is not installed (missing: {error.name}). It comes with "
            f"segkit's {extra!r} extra: pip install 'segkit[{extra}]'",
            name=error.name,
        ) from error
