"""Number validation shared by every configuration value pysockopt accepts.

One home for the rules: bool is never a number, a wrong type is a TypeError that says what
was expected, and a value out of range is an InvalidConfigError naming the field, the value
and what is allowed, raised before any syscall.
"""

from __future__ import annotations

import math

from .errors import InvalidConfigError

__all__ = ["check_int", "check_number", "check_seconds"]


def check_seconds(
    name: str, value: object, *, zero: bool = False, allowed: str | None = None
) -> float:
    """Return ``value`` as float seconds: finite and > 0 (or >= 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: no clock or timer takes it
        finite = False
    if not (finite and (value >= 0 if zero else value > 0)):
        bound = ">= 0" if zero else "> 0"
        raise InvalidConfigError(name, value, allowed or f"a finite number of seconds {bound}")
    return float(value)


def check_number(name: str, value: object, low: float, below: float, *, allowed: str) -> float:
    """Return ``value`` as float when it is a number (not bool) with ``low <= value < below``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not low <= value < below:  # False for NaN
        raise InvalidConfigError(name, value, allowed)
    return float(value)


def check_int(
    name: str, value: object, low: int, high: int | None = None, *,
    unit: str = "", why_not: str = "", allowed: str | None = None,
) -> int:
    """Return ``value`` when it is an int (not bool) in ``low..high`` (no upper bound: None).

    ``unit`` names what the int counts in the TypeError ("seconds"); ``why_not`` is added to
    the TypeError for a float (e.g. that a sub-second value would be truncated).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        what = f"an int number of {unit}" if unit else "an int"
        extra = why_not if isinstance(value, float) else ""
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}{extra}")
    if value < low or (high is not None and value > high):
        raise InvalidConfigError(
            name, value, allowed or (f"{low}..{high}" if high is not None else f">= {low}"))
    return value
