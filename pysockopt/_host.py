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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Final, TypeVar

T = TypeVar("T")

__all__ = [
    "ABSENT", "COUNTER_FILES", "COUNTER_SYSCTLS", "FACT_SYSCTLS", "SNMP_TCP_FIELDS",
    "SOCKSTAT_FIELDS", "SOCKSTAT_HOST_WIDE", "SYSCTL", "SYSCTLS", "TCP_EXT_FIELDS", "Counters",
    "Pickles", "RawCounters", "Reader",
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

    For text read elsewhere (inside another network namespace: see host/entering.py).
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


# --- the host's TCP counters and settings: one file list, one parser, one type

#: /proc/net/netstat ``TcpExt:`` counters a look keeps (cumulative since boot, per namespace),
#: with what each counts; the exporter exports every one of them.
TCP_EXT_FIELDS: Final[Mapping[str, str]] = MappingProxyType({
    "ListenOverflows": "SYNs or final ACKs that found a listener's accept queue full",
    "ListenDrops": "connection attempts a listener dropped (overflows and other causes)",
    "TCPAbortOnTimeout": "connections aborted because retransmissions or probes timed out",
    "TCPAbortOnData": "connections reset because data arrived after close",
    "TCPAbortOnClose": "connections reset because close() found unread data",
    "TCPAbortOnMemory": "connections aborted for lack of memory (orphans over the limit too)",
    "TCPAbortOnLinger": "connections reset by close() with SO_LINGER 0 or a linger timeout",
    "TCPSynRetrans": "SYN and SYN+ACK retransmissions",
    "TCPTimeouts": "retransmission timer expiries",
    "SyncookiesSent": "SYN cookies sent (the SYN queue was full)",
    "SyncookiesRecv": "valid SYN cookies received back",
    "SyncookiesFailed": "ACKs with an invalid SYN cookie",
    "TCPBacklogDrop": "packets dropped because the socket backlog was full",
    "TCPReqQFullDrop": "SYNs dropped because the SYN queue was full and cookies were off",
    "TCPReqQFullDoCookies": "SYNs answered with a cookie because the SYN queue was full",
    "TCPMemoryPressures": "times TCP entered memory pressure (net.ipv4.tcp_mem)",
    "TCPTimeWaitOverflow": "TIME_WAIT sockets not kept because tcp_max_tw_buckets was reached",
})
#: /proc/net/snmp ``Tcp:`` fields a look keeps, with their meaning; all are counters except
#: CurrEstab (a gauge).
SNMP_TCP_FIELDS: Final[Mapping[str, str]] = MappingProxyType({
    "ActiveOpens": "connections this host opened (connect())",
    "PassiveOpens": "connections this host accepted",
    "AttemptFails": "connection attempts that failed",
    "EstabResets": "ESTABLISHED or CLOSE_WAIT connections reset",
    "CurrEstab": "connections in ESTABLISHED or CLOSE_WAIT",
    "InSegs": "segments received",
    "OutSegs": "segments sent",
    "RetransSegs": "segments retransmitted",
    "InErrs": "segments received in error",
    "OutRsts": "segments sent with RST",
})
#: /proc/net/sockstat ``TCP:`` gauges: sockets in use, orphans, TIME_WAIT, allocated, and
#: the memory TCP uses in pages (compare with net.ipv4.tcp_mem, also in pages).
SOCKSTAT_FIELDS: Final = ("inuse", "orphan", "tw", "alloc", "mem")

#: Reads files and returns their texts, in order (None for one missing or unreadable). The one
#: seam through which a look reads /proc: a reader for another network namespace (all the
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


#: The settings the diagnosis rules weigh (HostFacts); all of them are per network namespace.
FACT_SYSCTLS: Final = (
    "net.ipv4.tcp_syncookies", "net.ipv4.tcp_max_syn_backlog", "net.core.somaxconn",
    "net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
)
#: Every sysctl a look reads next to the /proc/net files, and where each one lives: the
#: limits the counters are weighed against, then the settings the rules weigh.
SYSCTLS: Final[Mapping[str, str]] = MappingProxyType({
    "net.ipv4.tcp_mem": "initial namespace only",
    "net.ipv4.tcp_max_orphans": "initial namespace only",
    "net.ipv4.tcp_max_tw_buckets": "per namespace",
    "net.ipv4.ip_local_port_range": "per namespace",
    "net.ipv4.tcp_tw_reuse": "per namespace",
    "net.netfilter.nf_conntrack_count": "per namespace",
    "net.netfilter.nf_conntrack_max": "host-wide (read-only in other namespaces)",
    **{name: "per namespace" for name in FACT_SYSCTLS},
})
#: The old name of ``SYSCTLS``.
COUNTER_SYSCTLS: Final = SYSCTLS
#: /proc/net/sockstat TCP fields the kernel keeps for the whole host, not per namespace.
SOCKSTAT_HOST_WIDE: Final = frozenset({"orphan", "alloc", "mem"})
#: Every file ``read_counters`` reads, in the order it asks its reader for them.
COUNTER_FILES: Final = (
    "/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp",
    "/proc/thread-self/net/sockstat",
    *(SYSCTL + name.replace(".", "/") for name in SYSCTLS),
)


class Pickles:
    """Pickling for frozen value types whose mappings are read-only views.

    MappingProxyType does not pickle: the views travel as dicts and come back as views.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        values = tuple(dict(v) if isinstance(v, MappingProxyType) else v
                       for v in (getattr(self, f.name) for f in fields(self)))  # type: ignore[arg-type]
        return (_rebuild, (type(self), values))


def _rebuild(cls: type[T], values: tuple[Any, ...]) -> T:
    return cls(*(MappingProxyType(v) if isinstance(v, dict) else v for v in values))


@dataclass(frozen=True, slots=True)
class Counters(Pickles):
    """The host counters and settings of one look, by their kernel names (None: none here).

    ``tcp_ext``: /proc/net/netstat TcpExt (``TCP_EXT_FIELDS``: ListenOverflows,
    ListenDrops, TCPAbortOnTimeout, ...), cumulative since boot; ``tcp``: /proc/net/snmp Tcp
    (``SNMP_TCP_FIELDS``: ActiveOpens, RetransSegs, OutSegs, ...; CurrEstab is a gauge);
    ``sockstat``: /proc/net/sockstat TCP gauges (inuse, orphan, tw, alloc, mem in pages;
    inuse and tw are the namespace's, orphan, alloc and mem the whole host's).
    The limits they are weighed against: ``tcp_mem`` (pages: low, pressure, high),
    ``tcp_max_orphans``, ``tcp_max_tw_buckets`` (tcp_mem and tcp_max_orphans exist only in
    the initial network namespace), ``ip_local_port_range``, ``tcp_tw_reuse``, and
    ``conntrack_count`` / ``conntrack_max`` where conntrack is loaded (the count is per
    namespace, the maximum host-wide). The settings the rules weigh: ``tcp_syncookies``,
    ``tcp_max_syn_backlog``, ``somaxconn`` and ``keepalive`` (net.ipv4.tcp_keepalive_time,
    _intvl, _probes). Every field is one of ``SYSCTLS`` or a /proc/net table.
    """

    tcp_ext: Mapping[str, int | None]
    tcp: Mapping[str, int | None]
    sockstat: Mapping[str, int | None]
    tcp_mem: tuple[int, int, int] | None
    tcp_max_orphans: int | None
    tcp_max_tw_buckets: int | None
    ip_local_port_range: tuple[int, int] | None
    tcp_tw_reuse: int | None
    conntrack_count: int | None
    conntrack_max: int | None
    tcp_syncookies: int | None = None
    tcp_max_syn_backlog: int | None = None
    somaxconn: int | None = None
    keepalive: tuple[int, int, int] | None = None

    @classmethod
    def read(cls, read: Reader = read_texts) -> Counters:
        """Read them now (through ``read``, the seam for another namespace's files)."""
        return read_counters(read)

    @property
    def ephemeral_ports(self) -> int | None:
        """The size of net.ipv4.ip_local_port_range, or None when unknown."""
        r = self.ip_local_port_range
        return None if r is None else r[1] - r[0] + 1

    def as_dict(self) -> dict[str, object]:
        """Return the counters for JSON."""
        return {
            "TcpExt": dict(self.tcp_ext), "Tcp": dict(self.tcp),
            "sockstat": dict(self.sockstat),
            "tcp_mem": list(self.tcp_mem) if self.tcp_mem else None,
            "tcp_max_orphans": self.tcp_max_orphans,
            "tcp_max_tw_buckets": self.tcp_max_tw_buckets,
            "ip_local_port_range": list(self.ip_local_port_range or ()) or None,
            "tcp_tw_reuse": self.tcp_tw_reuse,
            "nf_conntrack_count": self.conntrack_count,
            "nf_conntrack_max": self.conntrack_max,
        }


#: The old name of ``Counters`` (it was a second, field-for-field copy).
RawCounters = Counters


def read_counters(read: Reader = read_texts) -> Counters:
    """Read every counter and setting a look keeps: three /proc/net files and ``SYSCTLS``.

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
    sysctls = dict(zip(SYSCTLS, texts[3:], strict=True))
    ext = counter_table(netstat, "TcpExt") if netstat is not None else {}
    tcp = counter_table(snmp, "Tcp") if snmp is not None else {}
    stat = sockstat_table(sockstat) if sockstat is not None else {}

    def ints(name: str) -> tuple[int, ...] | None:
        text = sysctls[name]
        return None if text is None else parse_ints(text)

    def one(name: str) -> int | None:
        values = ints(name)
        return values[0] if values else None

    mem = ints("net.ipv4.tcp_mem")
    ports = ints("net.ipv4.ip_local_port_range")
    ka0, ka1, ka2 = (one(f"net.ipv4.tcp_keepalive_{k}") for k in ("time", "intvl", "probes"))
    return Counters(
        tcp_ext=MappingProxyType({k: ext.get(k) for k in TCP_EXT_FIELDS}),
        tcp=MappingProxyType({k: tcp.get(k) for k in SNMP_TCP_FIELDS}),
        sockstat=MappingProxyType({k: stat.get(k) for k in SOCKSTAT_FIELDS}),
        tcp_mem=(mem[0], mem[1], mem[2]) if mem and len(mem) == 3 else None,
        tcp_max_orphans=one("net.ipv4.tcp_max_orphans"),
        tcp_max_tw_buckets=one("net.ipv4.tcp_max_tw_buckets"),
        ip_local_port_range=(ports[0], ports[1]) if ports and len(ports) == 2 else None,
        tcp_tw_reuse=one("net.ipv4.tcp_tw_reuse"),
        conntrack_count=one("net.netfilter.nf_conntrack_count"),
        conntrack_max=one("net.netfilter.nf_conntrack_max"),
        tcp_syncookies=one("net.ipv4.tcp_syncookies"),
        tcp_max_syn_backlog=one("net.ipv4.tcp_max_syn_backlog"),
        somaxconn=one("net.core.somaxconn"),
        keepalive=(ka0, ka1, ka2) if ka0 is not None and ka1 is not None and ka2 is not None
        else None,
    )
