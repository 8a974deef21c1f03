"""Checks of single settings, each written once: a number within bounds, an integer, a list of positive numbers.
Each returns the value or raises a `ConfigError` whose message names the key, the value and what was expected.
Standard library only, so the torch-free runtime checks its settings with the same words as the commands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and what was expected."""


def is_number(value: Any) -> bool:
    """A real number that is not a bool (`True` is an int to Python, never a setting's number)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def require_int(key: str, value: Any, minimum: int, maximum: int | None = None, hint: str = "") -> int:
    """`value` if it is an integer from `minimum` (to `maximum`); `hint` follows the expectation in the message."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum is not None
                                                                                    and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{key}={value}: expected an integer {bounds}{hint}")
    return value


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def require_number(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                   low_open: bool = False, high_open: bool = False, what: str = "") -> float:
    """`value` if it is a finite number within `low` and `high` (each included unless `..._open`), else a
    `ConfigError`: `key=value: expected a finite number > 0` and the like; `what` says what the number is."""
    inside = (is_number(value) and math.isfinite(value)
              and (low is None or (value > low if low_open else value >= low))
              and (high is None or (value < high if high_open else value <= high)))
    if not inside:
        raise ConfigError(f"{key}={value}: expected {what + ', ' if what else ''}"
                          f"{_bounds(low, high, low_open, high_open)}")
    return value


def require_positive(key: str, value: Any) -> float:
    """`value` if it is a finite number > 0."""
    return require_number(key, value, 0, low_open=True)


def require_positive_numbers(key: str, values: Any, expected: str, distinct: bool = False) -> tuple[float, ...]:
    """`values` as a tuple of floats if it is a non-empty list of finite numbers > 0 (each one once, with
    `distinct`); else a `ConfigError` naming the list and saying `expected`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{key}={values!r}: {expected}")
    if not all(is_number(value) and math.isfinite(value) and value > 0 for value in values):
        raise ConfigError(f"{key}={list(values)}: {expected}")
    if distinct and len(set(values)) != len(values):
        raise ConfigError(f"{key}={list(values)} names a value twice: {expected}")
    return tuple(float(value) for value in values)
