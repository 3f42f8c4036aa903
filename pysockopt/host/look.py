"""One look at a network namespace: what diagnose, watch, sample() and the exporter read.

The look sits below the diagnosis and the exporter: the sysctls the rules weigh
(``FACT_SYSCTLS``, ``facts_from``) and the exporter's scan (``scan``: files read once, listeners
dumped on their own, every other socket tallied in C, the rules run on what they read one by
one) live here, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple

from .. import _host
from .._native import ffi, lib
from .._sock import os_error
from ..keepalive import HostKeepalive
from ..tcpinfo import TCP_INFO_FIELDS, TcpState
from .connections import Connection, NativeDump, Timer, native_dump
from .model import Finding, HostFacts, Thresholds
from .namespaces import NetNamespace, NetnsArg, opened, read_files
from .owners import processes_of
from .rules import RULES, Snapshot
from .sample import Counters, Rates, Sample

__all__ = [
    "FACT_SYSCTLS", "TCP_INFO_OFFSETS", "Scan", "ScanOptions", "TimeWaitGroup", "facts_from",
    "owner_counts", "rule_findings", "scan", "tally",
]


#: The sysctls the rules weigh; all of them are per network namespace.
FACT_SYSCTLS: Final = (
    "net.ipv4.tcp_syncookies", "net.ipv4.tcp_max_syn_backlog", "net.core.somaxconn",
    "net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
)


def facts_from(sysctls: Mapping[str, tuple[int, ...] | None],
               tcp_ext: Mapping[str, int | None]) -> HostFacts:
    """Build HostFacts from values already read: ``FACT_SYSCTLS`` and the TcpExt counters.

    For a caller that reads them together with other files (the Prometheus collector reads
    each file once per scan); a sysctl missing from ``sysctls`` is unknown.
    """

    def one(name: str) -> int | None:
        values = sysctls.get(name)
        return values[0] if values else None

    ka = [one(f"net.ipv4.tcp_keepalive_{k}") for k in ("time", "intvl", "probes")]
    keepalive = (HostKeepalive(ka[0], ka[1], ka[2])
                 if ka[0] is not None and ka[1] is not None and ka[2] is not None else None)
    ports = sysctls.get("net.ipv4.ip_local_port_range")
    return HostFacts(
        tcp_syncookies=one("net.ipv4.tcp_syncookies"),
        tcp_max_syn_backlog=one("net.ipv4.tcp_max_syn_backlog"),
        somaxconn=one("net.core.somaxconn"),
        ip_local_port_range=(ports[0], ports[1]) if ports and len(ports) == 2 else None,
        tcp_tw_reuse=one("net.ipv4.tcp_tw_reuse"),
        keepalive=keepalive,
        listen_overflows=tcp_ext.get("ListenOverflows"),
        listen_drops=tcp_ext.get("ListenDrops"),
    )


# --- one scan of a namespace (what a scrape reads)


class TimeWaitGroup(NamedTuple):
    """TIME_WAIT sockets from one local address to one remote endpoint."""

    family: socket.AddressFamily
    source: str
    remote_address: str
    remote_port: int
    local_port: int
    sockets: int


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What a scan counts: per-port series, how many owners and destinations, thresholds."""

    ports: tuple[int, ...] = ()
    top: int = 5
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, slots=True)
class Scan:
    """What one scrape saw; None (or empty) where that part failed."""

    counts: Mapping[TcpState, int] | None
    port_counts: Mapping[int, Mapping[TcpState, int]]
    listeners: Sequence[Connection]
    close_wait_owners: Mapping[str, int] | None
    time_wait: Sequence[TimeWaitGroup]
    time_wait_total: int
    ephemeral_ports: int | None
    keepalive: int | None
    idle_no_keepalive: int | None
    counters: Counters  # the host counters (None values where the kernel has none)
    findings: Sequence[Finding] | None
    errors: tuple[str, ...]  # what failed, one message per failed part
    inode: int  # the namespace's: which earlier sample the next scrape compares with
    sample: Sample | None  # None when the dump failed


TCP_INFO_OFFSETS: Final = {f.name: f.offset for f in TCP_INFO_FIELDS}


def scan(options: ScanOptions, netns: NetnsArg = None,
          last: Mapping[int, Sample] | None = None) -> Scan:
    """Take the one look a scrape needs of one namespace (the only place a scrape reads it).

    ``netns``: another network namespace (None: the caller's), as ``connections(netns=)``
    takes it, opened once for the whole scan: every read sees the same namespace. Failing to
    open or enter it raises (NetnsGoneError, NetnsPermissionError, FileNotFoundError...);
    failures inside it are the scan's ``errors``. The look is a ``Sample`` (counts made in
    C, the listeners, the host ``Counters``, and the CLOSE_WAIT sockets the owners need);
    ``last``: the previous scrape's sample per namespace inode, which the time rules compare
    this one with (none on a namespace's first scrape).
    """
    errors: list[str] = []
    t = options.thresholds
    label = netns if isinstance(netns, NetNamespace) else None
    dumped: _Dumped | None = None
    owners: dict[str, int] | None = None
    findings: list[Finding] | None = None
    now: Sample | None = None
    start, wall = time.monotonic(), time.time()
    with opened(netns) as target:
        inode = (os.fstat(target.fd) if target is not None
                 else os.stat("/proc/thread-self/ns/net")).st_ino
        # read_files raises only when entering the namespace fails: that is the caller's.
        texts = _read_proc(_PROC_FILES, read_files(target, _PROC_FILES), errors)
        counters = Counters.read(lambda paths: [texts[p] for p in paths])
        sysctls = {name: _host.parse_ints(text) if (text := texts[path]) is not None else None
                   for name, path in zip(FACT_SYSCTLS, _FACT_PATHS, strict=True)}
        facts = facts_from(sysctls, counters.tcp_ext)
        low, high = facts.ip_local_port_range or (0, 0)
        where = label if target is not None else None
        try:
            # Listeners in a dump of their own (few, with their drop counts), as
            # connections() lists them; everything else is tallied in C.
            with native_dump(states=TcpState.LISTEN, target=target, netns=where) as dump:
                listeners = dump.connections()
            with native_dump(states=_NOT_LISTENING, with_info=True, target=target,
                             netns=where) as dump:
                dumped = tally(options, dump, listeners, low, high)
        except OSError as err:
            errors.append(f"the socket dump: {err}")
    if texts[_host.COUNTER_FILES[0]] is None or texts[_host.COUNTER_FILES[1]] is None:
        errors.append("the TCP counters (/proc/net/netstat, /proc/net/snmp) are missing")
    if dumped is not None:
        now = _sample(dumped, counters, start, wall)
    if dumped is not None and dumped.counts.get(TcpState.CLOSE_WAIT):
        try:
            owners = owner_counts([c for c in dumped.kept if c.state == TcpState.CLOSE_WAIT],
                             options.top)
        except OSError as err:
            errors.append(f"the CLOSE_WAIT owners: {err}")
    if dumped is not None and now is not None:
        earlier = (last or {}).get(inode)
        rates = _rates(earlier, now) if earlier is not None else None
        try:
            findings = rule_findings(dumped.listeners, dumped.kept, dumped.groups, low, high, t,
                                 facts, now, rates)
        except OSError as err:
            errors.append(f"the diagnosis: {err}")
    return Scan(
        dumped.counts if dumped else None, dumped.port_counts if dumped else {},
        dumped.listeners if dumped else [],
        owners, dumped.groups if dumped else [], dumped.time_wait if dumped else 0,
        high - low + 1 if high else None, dumped.keepalive if dumped else None,
        dumped.idle if dumped else None, counters, findings, tuple(errors), inode, now)


#: The sysctls the rules weigh (FACT_SYSCTLS), then every file a Sample's Counters read.
_FACT_PATHS: Final = tuple(map(_host.sysctl_path, FACT_SYSCTLS))
_PROC_FILES: Final = tuple(dict.fromkeys((*_FACT_PATHS, *_host.COUNTER_FILES)))


def _read_proc(paths: Sequence[str], results: Sequence[bytes | OSError],
               errors: list[str]) -> dict[str, str | None]:
    """Return each file's text from what ``read_files`` gave (bytes or OSError); None if absent.

    A file that exists but could not be read (EMFILE, EIO...) is also None, and said in
    ``errors``.
    """
    texts: dict[str, str | None] = {}
    for path, got in zip(paths, results, strict=True):
        if isinstance(got, OSError):
            if got.errno not in _host.ABSENT:
                errors.append(f"reading {path}: {got.strerror or got}")
            texts[path] = None
        else:
            texts[path] = got.decode("ascii", "replace")
    return texts


def _sample(dumped: _Dumped, counters: Counters, start: float, wall: float) -> Sample:
    """Return the scan as a Sample, for the rules and the next scrape's rates.

    ``close_wait`` is every CLOSE_WAIT socket (always decoded, for the owners);
    ``syn_recv`` per port only when the SYN_RECV sockets were decoded (a pile at the
    threshold) or there are none, else empty (see ``_rates``); ``ports`` is empty: the
    ports in use per destination would need every outgoing socket decoded.
    """
    counts = {s: n for s, n in sorted(dumped.counts.items()) if n}
    close_wait = tuple(c for c in dumped.kept if c.state is TcpState.CLOSE_WAIT)
    syn_recv = Counter(c.local_port for c in dumped.kept if c.state is TcpState.SYN_RECV)
    return Sample((start + time.monotonic()) / 2, wall, None, MappingProxyType(counts),
                  tuple(dumped.listeners), counters, close_wait,
                  MappingProxyType(dict(syn_recv)), MappingProxyType({}))


def _syn_recv_known(s: Sample) -> bool:
    """Whether ``s.syn_recv`` has every SYN_RECV socket (not only a count below threshold)."""
    return sum((s.syn_recv or {}).values()) == s.counts.get(TcpState.SYN_RECV, 0)


def _rates(earlier: Sample, now: Sample) -> Rates | None:
    """Return the rates since the last scrape (SYN_RECV per port only where both have it)."""
    if not now.time > earlier.time:
        return None
    rates = now.rates(earlier)
    if not (_syn_recv_known(earlier) and _syn_recv_known(now)):
        rates = dataclasses.replace(rates, syn_recv=MappingProxyType({}))
    return rates


class _Dumped(NamedTuple):
    counts: dict[TcpState, int]
    port_counts: dict[int, dict[TcpState, int]]
    groups: list[TimeWaitGroup]
    time_wait: int  # TIME_WAIT sockets on ephemeral ports, all groups together
    keepalive: int
    idle: int
    listeners: list[Connection]
    kept: list[Connection]  # what the rules read one by one


#: Every state but LISTEN: the sockets the C tally counts.
_NOT_LISTENING: Final[tuple[TcpState, ...]] = tuple(
    s for s in TcpState if s not in (TcpState.LISTEN, TcpState.NEW_SYN_RECV))


def tally(options: ScanOptions, dump: NativeDump, listeners: list[Connection], low: int,
           high: int) -> _Dumped:
    """Count one dump of every socket but the listeners in C (csrc/tally.c).

    Only what a rule reads one by one is decoded.
    """
    t = options.thresholds
    # Counts decide which states the rules must read socket by socket; a pile below its
    # threshold cannot fire, so it is only counted. CLOSE_WAIT is always read (owners).
    raw = dump.counts()
    keep = 1 << TcpState.CLOSE_WAIT
    for state, limit in ((TcpState.SYN_RECV, t.syn_recv),
                         (TcpState.FIN_WAIT1, t.fin_wait1),
                         (TcpState.FIN_WAIT2, t.fin_wait2),
                         (TcpState.LAST_ACK, t.last_ack)):
        if raw[state] >= limit:
            keep |= 1 << state
    spec = ffi.new("struct pso_tally_spec *")
    for i, p in enumerate(options.ports):
        spec.ports[i] = p
    spec.nports = len(options.ports)
    spec.keep_states = keep
    spec.retrans_min = t.retrans
    spec.idle_ms = min(int(t.idle_seconds * 1000), 2**32 - 1)
    spec.off_last_data_recv = TCP_INFO_OFFSETS["last_data_recv"]
    spec.off_last_ack_recv = TCP_INFO_OFFSETS["last_ack_recv"]
    spec.eph_low, spec.eph_high = low, high
    tally = ffi.new("struct pso_tally *")
    try:
        rc = lib.pso_tally(dump.sink, spec, tally)
        if rc:
            raise os_error(rc, "tallying the sock_diag dump")
        counts: dict[TcpState, int] = {s: raw[s] for s in _NOT_LISTENING}
        counts[TcpState.LISTEN] = len(listeners)
        port_counts: dict[int, dict[TcpState, int]] = {}
        for i, p in enumerate(options.ports):
            row = tally.port_counts[i]
            per: dict[TcpState, int] = {s: int(row[s]) for s in _NOT_LISTENING}
            per[TcpState.LISTEN] = sum(1 for c in listeners if c.local_port == p)
            port_counts[p] = per
        size = high - low + 1 if high else 0
        groups = _groups(tally, options.top, t.time_wait_ratio * size if size else float("inf"))
        return _Dumped(counts, port_counts, groups, int(tally.tw_grouped),
                       int(tally.keepalive), int(tally.idle_no_timer), listeners,
                       dump.connections())
    finally:
        lib.pso_tally_free(tally)


#: struct pso_tw_group, field for field (csrc/tally.h); checked against the build at import.
_GROUP: Final = struct.Struct("=16s16sIHHB3x")
if (_GROUP.size != ffi.sizeof("struct pso_tw_group")
        or ffi.offsetof("struct pso_tw_group", "family") != 40):  # pragma: no cover
    raise ImportError("pysockopt._native does not match host/look.py (struct pso_tw_group)")


def _groups(tally: object, top: int, threshold: float) -> list[TimeWaitGroup]:
    """Decode the largest groups: the ``top`` shown, and all of ``threshold`` or more."""
    n = tally.ngroups  # type: ignore[attr-defined]
    out: list[TimeWaitGroup] = []
    if not n:
        return out
    raw = ffi.buffer(tally.groups, n * _GROUP.size)  # type: ignore[attr-defined]
    ntop = socket.inet_ntop
    for i in range(n):
        src, dst, count, dport, sport, family = _GROUP.unpack_from(raw, i * _GROUP.size)
        if i >= top and count < threshold:
            break  # largest first: nothing further is shown or can fire
        fam = socket.AF_INET if family == socket.AF_INET else socket.AF_INET6
        width = 4 if fam == socket.AF_INET else 16
        out.append(TimeWaitGroup(fam, ntop(fam, src[:width]), ntop(fam, dst[:width]), dport,
                                 sport, count))
    return out


def owner_counts(close_wait: Sequence[Connection], top: int) -> dict[str, int]:
    """CLOSE_WAIT sockets per owning command name: top ``top``, then other and unknown."""
    found = processes_of(c.inode for c in close_wait if c.inode)
    by_command: Counter[str] = Counter()
    unknown = 0
    for c in close_wait:
        procs = found.get(c.inode, ()) if c.inode else ()
        if procs:
            # A socket held by several processes (inherited across fork) counts once, for
            # the first command name in sort order: the same owner every scrape.
            by_command[min(p.command for p in procs)] += 1
        else:
            unknown += 1
    out: dict[str, int] = {}
    ranked = by_command.most_common()
    for command, n in ranked[:top]:
        out[command] = n
    other = sum(n for _, n in ranked[top:])
    if other:
        out["other"] = out.get("other", 0) + other
    if unknown:
        out["unknown"] = out.get("unknown", 0) + unknown
    return out


def rule_findings(listeners: Sequence[Connection], kept: Sequence[Connection],
              groups: Sequence[TimeWaitGroup], low: int, high: int, t: Thresholds,
              facts: HostFacts, now: Sample | None = None,
              rates: Rates | None = None) -> list[Finding]:
    """Run RULES on what the rules read socket by socket; the rest cannot fire.

    TIME_WAIT_PRESSURE counts sockets per (local address, destination): a group that reaches
    its threshold is handed over as that many references to one record (a list repeat, no
    object per socket); smaller groups cannot fire and are left out.
    """
    by_state: dict[TcpState, list[Connection]] = {TcpState.LISTEN: list(listeners)}
    for c in kept:
        by_state.setdefault(c.state, []).append(c)
    size = high - low + 1 if high else 0
    if size:
        tw: list[Connection] = []
        for g in groups:
            if g.sockets / size < t.time_wait_ratio:
                break  # largest first
            example = Connection(g.family, TcpState.TIME_WAIT, g.source, g.local_port,
                                 g.remote_address, g.remote_port, 0, 0, 0, 0,
                                 Timer.TIME_WAIT, 0, 0)
            tw += [example] * g.sockets
        if tw:
            by_state[TcpState.TIME_WAIT] = tw
    conns = [c for v in by_state.values() for c in v]
    snap = Snapshot(conns, by_state, facts, sample=now, rates=rates)
    return [f for rule in RULES for f in rule.check(rule, snap, t)]
