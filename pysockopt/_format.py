"""How pysockopt writes endpoints, processes and durations for people, in one place."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "count", "duration", "endpoint", "printable", "process", "processes", "ss_duration", "ss_timer",
]


class _Process(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def command(self) -> str: ...


#: Short escapes for the control characters people know by sight.
_SHORT: dict[int, str] = {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def printable(text: str) -> str:
    r"""Return ``text`` with every non-printable character escaped, safe to show on a terminal.

    Anything from /proc (a process names itself: ``prctl(PR_SET_NAME)``) or the network may
    carry terminal escape sequences; ``"\x1b]0;x\x07"`` comes back as ``\x1b]0;x\x07``
    in plain characters. Controls (C0, DEL, C1), format characters (bidi overrides, zero
    width), separators other than the space, surrogates and unassigned code points are
    written as ``\t``, ``\n``, ``\r``, ``\xNN``, ``\uNNNN`` or ``\UNNNNNNNN``, as ``repr`` does;
    everything else, backslashes included, is left alone. Apply it per line: a newline is
    escaped too. JSON output needs none of this (json.dumps escapes controls itself).
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ord(ch)) for ch in text)


def _escape(code: int) -> str:
    short = _SHORT.get(code)
    if short is not None:
        return short
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """Return ``1 connection``, ``2 connections`` (``plural`` for irregular nouns)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def endpoint(family: int, address: str, port: int) -> str:
    """Write ``10.0.0.5:5432`` or ``[::1]:443``; port 0 (a wildcard) is ``*``, as ss prints it."""
    host = f"[{address}]" if family == socket.AF_INET6 else address
    return f"{host}:{port if port else '*'}"


def process(p: _Process) -> str:
    """Name a process as ``nginx (pid 812)``, its name made printable (see ``printable``)."""
    return f"{printable(p.command)} (pid {p.pid})"


def processes(procs: Sequence[_Process], most: int | None = None) -> str:
    """Name processes as ``a (pid 1), b (pid 2)``; with ``most``, that many and ``and N more``."""
    shown = procs if most is None else procs[:most]
    text = ", ".join(process(p) for p in shown)
    if most is not None and len(procs) > most:
        text += f" and {len(procs) - most} more"
    return text


def duration(seconds: float) -> str:
    """Return ``seconds`` as e.g. ``2 h 11 min 15 s``; under a minute to the millisecond.

    ``9.5`` is ``9.5 s``, never rounded to a whole second a budget does not have.
    """
    if seconds < 60:
        return f"{round(seconds, 3):g} s"
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds} s")
    return " ".join(parts)


def ss_duration(ms: int) -> str:
    """Write a timer's milliseconds as ``ss -o`` does: ``119min``, ``1min5sec``, ``9.501sec``.

    As iproute2's print_ms_timer: minutes drop the milliseconds, ten minutes or more drop
    the seconds, ten seconds or more drop the milliseconds; nothing left is ``0ms``.
    """
    ms = max(ms, 0)
    minutes, secs, msecs = ms // 60000, ms // 1000 % 60, ms % 1000
    text = ""
    if minutes:
        msecs = 0
        text = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        text += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        text += f"{msecs:03d}{'sec' if secs else 'ms'}"
    return text or "0ms"


def ss_timer(label: str, ms: int, retrans: int) -> str:
    """Write a pending timer as ``ss -o`` does, without its ``timer:``: ``keepalive(119min,0)``."""
    return f"{label}({ss_duration(ms)},{retrans})"
