"""How pysockopt writes endpoints, processes and durations for people, in one place."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

__all__ = ["duration", "endpoint", "printable", "process", "processes"]


class _Process(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def command(self) -> str: ...


def endpoint(family: int, address: str, port: int) -> str:
    """Write ``10.0.0.5:5432`` or ``[::1]:443``; port 0 (a wildcard) is ``*``, as ss prints it."""
    host = f"[{address}]" if family == socket.AF_INET6 else address
    return f"{host}:{port if port else '*'}"


def process(p: _Process) -> str:
    """Name a process as ``nginx (pid 812)``."""
    return f"{p.command} (pid {p.pid})"


def processes(procs: Sequence[_Process], most: int | None = None) -> str:
    """Name processes as ``a (pid 1), b (pid 2)``; with ``most``, that many and ``and N more``."""
    shown = procs if most is None else procs[:most]
    text = ", ".join(process(p) for p in shown)
    if most is not None and len(procs) > most:
        text += f" and {len(procs) - most} more"
    return text


def duration(seconds: float) -> str:
    """Return ``seconds`` as e.g. ``2 h 11 min 15 s``."""
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds} s")
    return " ".join(parts)


def printable(text: str) -> str:
    r"""Return ``text`` safe for a terminal: every non-printable character as ``\xNN``.

    Anything read from /proc or the network (command names, addresses) may hold escape
    sequences that would move the cursor or recolour a terminal; ``\`` is escaped too,
    so the output cannot be mistaken for an escape the text really held.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
