"""Number checks for config fields: one wording, one treatment of NaN, inf and bool.

NaN compares false with everything, so a bare range check lets it through;
``True`` is an int to Python but never a meaningful duration or count. Every
config of the node validates its numbers here, so every bad value is refused
the same way: a ``ConfigError`` naming the field and the value.
"""

from __future__ import annotations

import math
from typing import TypeGuard

from .errors import ConfigError


def is_finite(value: object) -> TypeGuard[float]:
    """A finite int or float: not a bool, NaN, an infinity or an int beyond any float.

    The one test of "a usable number" for config fields and for numbers other
    actors report (gauges, times, round trips), where a bad one is counted.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def finite(name: str, value: object) -> float:
    """``value`` as a float, or a ConfigError naming the field (NaN, inf and bool refused)."""
    if not is_finite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def non_negative(name: str, value: object) -> float:
    """A finite number >= 0 (a duration that may be zero, a threshold)."""
    number = finite(name, value)
    if number < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def positive(name: str, value: object) -> float:
    """A finite number > 0 (an interval, a timeout)."""
    number = finite(name, value)
    if number <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def at_most(name: str, value: float, limit: float, why: str) -> float:
    """``value`` (checked finite already) unless above ``limit``: a bound that keeps the
    node working (``why`` says what would break), not a matter of taste."""
    if value > limit:
        raise ConfigError(f"{name} must be at most {limit:g}, got {value!r}: {why}")
    return value


def count(name: str, value: object, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (a size, a capacity, a number of attempts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
