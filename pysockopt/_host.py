"""Every read of /proc/sys and of the host's TCP counters, in one place.

All reads go through /proc/thread-self or /proc/sys, which follow the calling thread's network
namespace (a thread that joined another namespace sees that namespace's values); /proc/self/net
and /proc/net would show the process's own namespace instead. A value that is missing or not a
number is None: callers say "unknown", never 0. Any other failure to read (EMFILE, ENFILE,
ENOMEM, EIO) raises OSError: a fact we failed to read is not a fact the host lacks.
"""

from __future__ import annotations

import errno
import itertools
from typing import Final

__all__ = [
    "SYSCTL", "counter_table", "netstat_counters", "parse_ints", "read_int", "read_ints", "sysctl",
    "sysctl_int", "sysctl_path",
]

#: Where sysctls live; ``sysctl("net.ipv4.tcp_syncookies")`` reads SYSCTL + "net/ipv4/...".
SYSCTL: Final = "/proc/sys/"

#: A file that is not there (this kernel or namespace has no such sysctl) or not ours to read.
_ABSENT: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM})


def read_ints(path: str) -> tuple[int, ...] | None:
    """Return the whitespace-separated integers of a small text file, or None if absent.

    None also for a file we may not read or whose text is not numbers; any other OSError
    (EMFILE...) is raised.
    """
    try:
        with open(path, encoding="ascii") as f:
            return tuple(int(x) for x in f.read().split())
    except OSError as err:
        if err.errno in _ABSENT:
            return None
        raise
    except (ValueError, UnicodeDecodeError):
        return None


def read_int(path: str) -> int | None:
    """Return the first integer in a small text file, or None if missing or not a number."""
    values = read_ints(path)
    return values[0] if values else None


def sysctl(name: str) -> tuple[int, ...] | None:
    """Return a numeric sysctl (``"net.ipv4.ip_local_port_range"`` -> ``(32768, 60999)``)."""
    return read_ints(sysctl_path(name))


def sysctl_path(name: str) -> str:
    """Return the file of a sysctl: ``"net.core.somaxconn"`` -> /proc/sys/net/core/somaxconn."""
    return SYSCTL + name.replace(".", "/")


def parse_ints(text: bytes | str) -> tuple[int, ...] | None:
    """Return the whitespace-separated integers of a small file's text, or None if not numbers.

    For text read elsewhere (inside another network namespace: see host/namespaces.py).
    """
    try:
        return tuple(int(x) for x in text.split())
    except ValueError:
        return None


def sysctl_int(name: str) -> int | None:
    """Return a one-number sysctl (``"net.core.somaxconn"`` -> 4096), or None."""
    values = sysctl(name)
    return values[0] if values else None


def counter_table(text: str, prefix: str) -> dict[str, int | None]:
    """Return the ``prefix`` table (``"TcpExt"``, ``"Tcp"``) of /proc/net/netstat or snmp text.

    Those files hold pairs of lines, names then values, each starting with ``prefix:``. A value
    that is not a number is None; an absent table is an empty dict.
    """
    lines = text.splitlines()
    head = prefix + ":"
    for names, values in itertools.pairwise(lines):
        if names.startswith(head) and values.startswith(head):
            return {name: _count(value) for name, value in
                    zip(names.split()[1:], values.split()[1:], strict=False)}
    return {}


def netstat_counters(name: str, prefix: str) -> dict[str, int | None] | None:
    """Return one table of /proc/thread-self/net/``name``; None when the file is absent.

    Other failures to read it (EMFILE...) raise OSError.
    """
    try:
        with open(f"/proc/thread-self/net/{name}", encoding="ascii", errors="replace") as f:
            return counter_table(f.read(), prefix)
    except OSError as err:
        if err.errno in _ABSENT:
            return None
        raise


def _count(value: str) -> int | None:
    # Counters are unsigned; a negative or garbled value is unknown, not a number.
    return int(value) if value.isascii() and value.isdigit() else None
