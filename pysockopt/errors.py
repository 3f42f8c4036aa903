"""Exceptions raised by pysockopt besides the kernel's own OSError subclasses."""

from __future__ import annotations

__all__ = ["InvalidConfigError", "UnsupportedPlatformError"]


class InvalidConfigError(ValueError):
    """A configuration value is outside what the platform accepts.

    Raised at construction, before any syscall. ``field``, ``value`` and ``allowed`` say which
    value was wrong and what would have been accepted.
    """

    def __init__(self, field: str, value: object, allowed: str, why: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        detail = f": {why}" if why else ""
        super().__init__(f"{field}={value!r} is out of range; allowed: {allowed}{detail}")


class UnsupportedPlatformError(OSError):
    """The running platform cannot do what was asked (it never gets a wrong answer instead)."""
