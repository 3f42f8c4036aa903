"""Every exception pysockopt raises itself, besides the kernel's own OSError subclasses.

One root, ``Error``; each library error also has the builtin parent a caller would expect
(``InvalidConfigError`` is a ValueError, ``NetnsGoneError`` a FileNotFoundError, ...), so
``except ValueError`` and ``except pysockopt.Error`` both catch it. The kernel's errors
(ECONNRESET, EPERM from setsockopt, ...) stay plain OSError subclasses with their errno.
The classes stay importable from the modules that raise them (``pysockopt.host.namespaces``,
``pysockopt.errno``, ``pysockopt.integrations``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "Error",
    "InvalidConfigError",
    "NetnsGoneError",
    "NetnsPermissionError",
    "NotANetnsError",
    "UnknownErrnoName",
    "UnsupportedClientError",
    "UnsupportedPlatformError",
]


class Error(Exception):
    """The root of every error pysockopt raises itself (never of the kernel's OSErrors)."""


class InvalidConfigError(ValueError, Error):
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


class UnsupportedPlatformError(OSError, Error):
    """The running platform cannot do what was asked (it never gets a wrong answer instead)."""


# --- network namespaces


class NetnsPermissionError(PermissionError, Error):
    """Entering (or even naming) another network namespace was refused.

    ``check`` says which refusal it was: ``"setns"`` (entering needs CAP_SYS_ADMIN over the
    namespace's user namespace), ``"ptrace"`` (opening /proc/PID/ns/net passes the kernel's
    ptrace access check: another user's process needs root or CAP_SYS_PTRACE, and even root
    can be refused by a security module or for a process of another user namespace) or
    ``"open"`` (the file's own permissions). Run as root to see every namespace.
    """

    check: str

    def __init__(self, code: int, message: str, check: str = "setns") -> None:
        super().__init__(code, message)
        self.check = check

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errno, self.strerror, self.check))


class NetnsGoneError(FileNotFoundError, Error):
    """The namespace no longer exists: its last process exited and nothing mounts it."""


#: What ``netns=`` accepts, for messages.
_NETNS_ACCEPTS: Final = ("a network namespace: an ip netns name, a path (/run/netns/NAME, "
                        "/proc/PID/ns/net) or a pid")


class NotANetnsError(InvalidConfigError):
    """A path given as ``netns=`` is not a network namespace; ``kind`` says what it is.

    ``kind``: "a FIFO", "a character device", "a directory", "a regular file", "a mnt
    namespace"... Only files of the namespace filesystem (nsfs) are ever opened: a FIFO would
    block, and opening a device can act.
    """

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        super().__init__("netns", path, _NETNS_ACCEPTS, f"not a network namespace but {kind}")


# --- errno names


class UnknownErrnoName(LookupError, Error):
    """No errno of that name on this platform; ``suggestions`` holds the closest names."""

    def __init__(self, name: str, suggestions: tuple[str, ...]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"no errno named {name!r} on this platform{hint}")


# --- client libraries


class UnsupportedClientError(RuntimeError, Error):
    """The client library, in this version or used this way, would ignore the settings.

    The message names the library, what it lacks and, for an old version, the version
    needed. Raised instead of returning settings that would be silently dropped.
    """
