"""How pysockopt writes endpoints, processes and durations for people, in one place."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "count", "duration", "endpoint", "escape", "for_json", "label", "printable", "process",
    "processes", "ss_duration", "ss_timer",
]


class _Process(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def command(self) -> str: ...


#: Short escapes for the control characters people know by sight.
_SHORT: dict[int, str] = {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def escape(text: str | bytes) -> str:
    r"""Return a name or path as valid text, written one way everywhere: the one rule.

    Names, paths, process names and cgroup paths are bytes on Linux, and the API keeps them
    as the OS gives them (``str`` with undecodable bytes as surrogates, ``os.fsdecode``'s
    surrogateescape, or ``bytes``). Where they become text for others (a Prometheus label,
    JSON, a terminal) each undecodable byte is written ``\xNN`` and each backslash ``\\``, so
    no two names give the same text: ``b"odd\xff"`` is ``odd\xff``, the four characters
    ``a\xb`` are ``a\\xb``. Everything else is left as it is (``printable`` also escapes
    controls for a terminal; labels and JSON escape those themselves).
    """
    return _escaped(text, controls=False)


def printable(text: str | bytes) -> str:
    r"""Return ``text`` with every non-printable character escaped, safe to show on a terminal.

    Anything from /proc (a process names itself: ``prctl(PR_SET_NAME)``) or the network may
    carry terminal escape sequences; ``"\x1b]0;x\x07"`` comes back as ``\x1b]0;x\x07``
    in plain characters. Undecodable bytes and backslashes are written as ``escape`` writes
    them (``\xNN``, ``\\``: a literal ``\t`` never reads as a tab); controls (C0, DEL, C1),
    format characters (bidi overrides, zero width), separators other than the space, other
    surrogates and unassigned code points as ``\t``, ``\n``, ``\r``, ``\xNN``, ``\uNNNN`` or
    ``\UNNNNNNNN``, as ``repr`` does. Apply it once per line: a newline is escaped too.
    """
    return _escaped(text, controls=True)


def _escaped(text: str | bytes, *, controls: bool) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if "\\" not in text and (text.isprintable() if controls else _encodable(text)):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{code - 0xDC00:02x}")
        elif controls and not ch.isprintable():
            out.append(_escape(code))
        elif not controls and 0xD800 <= code <= 0xDFFF:  # a lone surrogate: not UTF-8
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def for_json(data: object) -> object:
    """Return ``data`` with every string (keys too) written as ``escape`` writes it.

    What the CLI prints as JSON goes through here: valid UTF-8 whatever a name holds.
    """
    if isinstance(data, (str, bytes)):
        return escape(data)
    if isinstance(data, dict):
        return {for_json(k) if isinstance(k, (str, bytes)) else k: for_json(v)
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [for_json(v) for v in data]
    return data


def label(text: str | bytes, reserved: Callable[[str], bool] = lambda _: False) -> str:
    r"""Return ``escape(text)`` for a Prometheus label, unique by construction.

    ``reserved`` says which texts the caller gives a meaning of its own (``"inode N"`` for a
    namespace without a name, ``"other"`` for an owner bucket): a name written like one of
    them has its first character written ``\xNN``, which ``escape`` never writes for a
    character it leaves alone, so no name takes a reserved label.
    """
    text = escape(text)
    if text and reserved(text):
        return f"\\x{ord(text[0]):02x}{text[1:]}"
    return text


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
    """Name a process as ``nginx (pid 812)``, its name as it is.

    Not escaped here: text is escaped once, where it leaves (``printable`` per line for a
    terminal, ``escape`` for JSON and labels); escaping twice would double each backslash.
    """
    return f"{p.command} (pid {p.pid})"


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
