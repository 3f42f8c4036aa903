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
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

__all__ = [
    "ABSENT", "COUNTER_FILES", "COUNTER_SYSCTLS", "SNMP_TCP_FIELDS", "SOCKSTAT_FIELDS",
    "SOCKSTAT_HOST_WIDE", "SYSCTL", "TCP_EXT_FIELDS", "RawCounters", "Reader",
    "counter_table", "netstat_counters", "parse_ints", "read_counters", "read_int",
    "read_ints", "read_text", "read_texts", "sockstat_table", "sysctl", "sysctl_int",
    "sysctl_path",
]

#: Where sysctls live; ``sysctl("net.ipv4.tcp_syncookies")`` reads SYSCTL + "net/ipv4/...".
SYSCTL: Final = "/proc/sys/"

#: The errnos of a file that is not there (this kernel or namespace has no such sysctl) or not
#: ours to read: that fact is unknown (None), not a failure. Every reader of /proc/sys and the
#: counters uses this one set (host/diagnosis.py too, for files read inside another namespace).
ABSENT: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM})


def read_ints(path: str) -> tuple[int, ...] | None:
    """Return the whitespace-separated integers of a small text file, or None if absent.

    None also for a file we may not read or whose text is not numbers; any other OSError
    (EMFILE...) is raised.
    """
    try:
        with open(path, encoding="ascii") as f:
            return tuple(int(x) for x in f.read().split())
    except OSError as err:
        if err.errno in ABSENT:
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
        if err.errno in ABSENT:
            return None
        raise


def _count(value: str) -> int | None:
    # Counters are unsigned; a negative or garbled value is unknown, not a number.
    return int(value) if value.isascii() and value.isdigit() else None


# --- the host's TCP counters, read once per sample

#: /proc/net/netstat ``TcpExt:`` counters a sample keeps (cumulative since boot, per namespace).
TCP_EXT_FIELDS: Final = (
    "ListenOverflows", "ListenDrops", "TCPAbortOnTimeout", "TCPAbortOnData", "TCPAbortOnClose",
    "TCPAbortOnMemory", "TCPAbortOnLinger", "TCPSynRetrans", "TCPTimeouts", "SyncookiesSent",
    "SyncookiesRecv", "SyncookiesFailed", "TCPBacklogDrop", "TCPReqQFullDrop",
    "TCPReqQFullDoCookies", "TCPMemoryPressures", "TCPTimeWaitOverflow",
)
#: /proc/net/snmp ``Tcp:`` fields a sample keeps; all are counters except CurrEstab (a gauge).
SNMP_TCP_FIELDS: Final = (
    "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab", "InSegs",
    "OutSegs", "RetransSegs", "InErrs", "OutRsts",
)
#: /proc/net/sockstat ``TCP:`` gauges: sockets in use, orphans, TIME_WAIT, allocated, and
#: the memory TCP uses in pages (compare with net.ipv4.tcp_mem, also in pages).
SOCKSTAT_FIELDS: Final = ("inuse", "orphan", "tw", "alloc", "mem")

#: Reads files and returns their texts, in order (None for one missing or unreadable). The one
#: seam through which a sample reads /proc: a reader for another network namespace (all the
#: files in one visit there) plugs in here; the default, ``read_texts``, sees the calling
#: thread's namespace.
Reader = Callable[[Sequence[str]], Sequence["str | None"]]


def read_text(path: str) -> str | None:
    """Return the text of a small /proc or /proc/sys file, or None if it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_texts(paths: Sequence[str]) -> list[str | None]:
    """Return ``read_text`` of each path, in order."""
    return [read_text(p) for p in paths]


def sockstat_table(text: str, prefix: str = "TCP") -> dict[str, int | None]:
    """Return the ``prefix:`` line of /proc/net/sockstat as a dict (``inuse``, ``tw``, ...).

    The line alternates names and values (``TCP: inuse 5 orphan 0 tw 12 alloc 7 mem 3``);
    a value that is not a number is None, an absent line an empty dict.
    """
    head = prefix + ":"
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == head:
            return {name: _count(value) for name, value in
                    zip(words[1::2], words[2::2], strict=False)}
    return {}


class RawCounters(NamedTuple):
    """The host counters as read, by their kernel names; None where the kernel has none."""

    tcp_ext: dict[str, int | None]
    tcp: dict[str, int | None]
    sockstat: dict[str, int | None]
    tcp_mem: tuple[int, int, int] | None
    tcp_max_orphans: int | None
    tcp_max_tw_buckets: int | None
    ip_local_port_range: tuple[int, int] | None
    tcp_tw_reuse: int | None
    conntrack_count: int | None
    conntrack_max: int | None


#: The sysctls a sample reads next to the /proc/net files, and where each one lives.
COUNTER_SYSCTLS: Final = {
    "net.ipv4.tcp_mem": "initial namespace only",
    "net.ipv4.tcp_max_orphans": "initial namespace only",
    "net.ipv4.tcp_max_tw_buckets": "per namespace",
    "net.ipv4.ip_local_port_range": "per namespace",
    "net.ipv4.tcp_tw_reuse": "per namespace",
    "net.netfilter.nf_conntrack_count": "per namespace",
    "net.netfilter.nf_conntrack_max": "host-wide (read-only in other namespaces)",
}
#: /proc/net/sockstat TCP fields the kernel keeps for the whole host, not per namespace.
SOCKSTAT_HOST_WIDE: Final = frozenset({"orphan", "alloc", "mem"})
#: Every file ``read_counters`` reads, in the order it asks its reader for them.
COUNTER_FILES: Final = (
    "/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp",
    "/proc/thread-self/net/sockstat",
    *(SYSCTL + name.replace(".", "/") for name in COUNTER_SYSCTLS),
)


def read_counters(read: Reader = read_texts) -> RawCounters:
    """Read every counter a sample keeps: three /proc/net files and a few sysctls, once each.

    ``read`` gets ``COUNTER_FILES`` in one call. net.ipv4.tcp_mem and tcp_max_orphans exist
    only in the initial network namespace, and the conntrack files only where conntrack is
    loaded: None there. Of sockstat, inuse and tw are the namespace's while orphan, alloc and
    mem are one counter for the whole host; the TcpExt and Tcp tables are per network
    namespace.
    """
    texts = list(read(COUNTER_FILES))
    if len(texts) != len(COUNTER_FILES):
        raise ValueError(f"the reader returned {len(texts)} texts for {len(COUNTER_FILES)} files")
    netstat, snmp, sockstat = texts[:3]
    sysctls = dict(zip(COUNTER_SYSCTLS, texts[3:], strict=True))
    ext = counter_table(netstat, "TcpExt") if netstat is not None else {}
    tcp = counter_table(snmp, "Tcp") if snmp is not None else {}
    stat = sockstat_table(sockstat) if sockstat is not None else {}

    def ints(name: str) -> tuple[int, ...] | None:
        text = sysctls[name]
        if text is None:
            return None
        try:
            return tuple(int(x) for x in text.split())
        except ValueError:
            return None

    def one(name: str) -> int | None:
        values = ints(name)
        return values[0] if values else None

    mem = ints("net.ipv4.tcp_mem")
    ports = ints("net.ipv4.ip_local_port_range")
    return RawCounters(
        tcp_ext={k: ext.get(k) for k in TCP_EXT_FIELDS},
        tcp={k: tcp.get(k) for k in SNMP_TCP_FIELDS},
        sockstat={k: stat.get(k) for k in SOCKSTAT_FIELDS},
        tcp_mem=(mem[0], mem[1], mem[2]) if mem and len(mem) == 3 else None,
        tcp_max_orphans=one("net.ipv4.tcp_max_orphans"),
        tcp_max_tw_buckets=one("net.ipv4.tcp_max_tw_buckets"),
        ip_local_port_range=(ports[0], ports[1]) if ports and len(ports) == 2 else None,
        tcp_tw_reuse=one("net.ipv4.tcp_tw_reuse"),
        conntrack_count=one("net.netfilter.nf_conntrack_count"),
        conntrack_max=one("net.netfilter.nf_conntrack_max"),
    )
