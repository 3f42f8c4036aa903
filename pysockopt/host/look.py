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
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from .. import _host
from .._core import ffi, lib, new_tally
from .._format import label
from .._sock import os_error
from ..errors import InvalidConfigError
from ..tcpinfo import TCP_INFO_FIELDS, TcpState
from . import namespaces
from .closed import CloseFeed, CloseTotals
from .connections import Connection, DumpSpec, NativeDump, Timer, trip
from .model import Finding, HostFacts, Thresholds
from .namespaces import Entered, NetNamespace, NetnsArg, opened, read_files
from .owners import OwnerBook, OwnerCache
from .rules import RULES, Pick, Rule, Snapshot
from .sample import Counters, Destination, PortCount, Rates, Sample, of_connections

__all__ = [
    "COUNTED", "FACT_SYSCTLS", "LOOK_FILES", "TCP_INFO_OFFSETS", "Look", "Needs", "Scan",
    "ScanOptions", "Sockets", "Tally", "TimeWaitGroup", "facts_from", "keep_states", "look",
    "owner_counts", "read_host", "sample", "scan", "scraped_rules", "sockets_needed", "tally",
    "tally_picks", "tally_spec",
]


#: The sysctls the rules weigh (one list with the counters' limits: ``_host.SYSCTLS``).
FACT_SYSCTLS: Final = _host.FACT_SYSCTLS


def facts_from(sysctls: Mapping[str, tuple[int, ...] | None],
               tcp_ext: Mapping[str, int | None]) -> HostFacts:
    """Build HostFacts from values already read: ``FACT_SYSCTLS`` and the TcpExt counters.

    For a caller that read them itself; a sysctl missing from ``sysctls`` is unknown. They go
    through the one parser (``_host.read_counters``), as the files a look reads do.
    """
    known = [k for k, v in tcp_ext.items() if v is not None]
    texts = {_host.sysctl_path(name): " ".join(map(str, values))
             for name, values in sysctls.items() if values}
    texts["/proc/thread-self/net/netstat"] = (
        f"TcpExt: {' '.join(known)}\nTcpExt: {' '.join(str(tcp_ext[k]) for k in known)}\n")
    return HostFacts(_host.read_counters(lambda paths: [texts.get(p) for p in paths]))


# --- what a look reads


#: Which sockets a look decodes: ``every`` one (diagnose, a detailed sample), what the ``rules``
#: pick (the rest counted in C: the exporter), or only the listeners (``counts``).
Sockets = Literal["every", "rules", "counts"]


@dataclass(frozen=True, slots=True)
class Needs:
    """What one look reads, besides the files (always read, once each, in one trip).

    ``sockets``: see ``Sockets``; ``port``: only sockets with that local or remote port (a
    filter the kernel runs); ``with_info``: tcp_info attached (``every`` only; ``rules``
    asks for it where a pick reads it). For ``rules``: ``thresholds`` decide which piles are
    read one by one, ``ports`` get per-port state counts, ``top`` TIME_WAIT groups are kept
    by name.
    """

    sockets: Sockets = "every"
    port: int | None = None
    with_info: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)
    ports: tuple[int, ...] = ()
    top: int = 5


#: The exporter's options: a look that decodes what the rules pick.
ScanOptions = Needs


class TimeWaitGroup(NamedTuple):
    """TIME_WAIT sockets from one local address to one remote endpoint."""

    family: socket.AddressFamily
    source: str
    remote_address: str
    remote_port: int
    local_port: int
    sockets: int


class Tally(NamedTuple):
    """What the C tally counted of the sockets a ``rules`` look did not decode.

    ``picked``: sockets per counted pick (``COUNTED`` names and the rules' narrowed picks,
    ``"RETRANSMITTING"``...); ``time_wait``: TIME_WAIT sockets on ephemeral ports, every
    group together; ``groups``: the largest TIME_WAIT groups (the ``top``, and every one that
    can fire); ``ports``: the ephemeral ports in use per destination (as a detailed Sample's),
    when a rule reads them.
    """

    port_counts: dict[int, dict[TcpState, int]]
    groups: list[TimeWaitGroup]
    time_wait: int
    picked: dict[str, int]
    ports: dict[Destination, PortCount] | None = None


@dataclass(frozen=True, slots=True)
class Look:
    """One look at a network namespace: its files, its sockets, and who holds them.

    ``netns``: the namespace (None: the caller's); ``inode``: its inode either way.
    ``counters`` and ``facts``: the host counters and the sysctls the rules weigh, read in
    one trip. ``listeners``: every LISTEN socket; ``sockets``: what was decoded (see
    ``Needs.sockets``; listeners first); ``counts``: sockets per state (None: the dump
    failed); ``tally``: the C counts of a ``rules`` look. ``sample``: the look as a Sample
    (None when the dump failed). ``errors``: what failed (a look taken with ``strict=False``
    goes on without it; the others raise). ``owners``: the owner lookups of this look.
    ``closes``: what a closed-connection log (``look(feed=)``) read since the namespace's
    previous look (None without one, or at its first look): the rules on closes read it.
    """

    netns: NetNamespace | None
    inode: int
    needs: Needs
    counters: Counters
    facts: HostFacts
    listeners: tuple[Connection, ...]
    sockets: tuple[Connection, ...]
    counts: Mapping[TcpState, int] | None
    tally: Tally | None
    sample: Sample | None
    errors: tuple[str, ...]
    owners: OwnerBook
    closes: CloseTotals | None = None

    def by_state(self) -> dict[TcpState, list[Connection]]:
        """Return the decoded sockets per state.

        A ``rules`` look's TIME_WAIT groups that can fire come as that many references to
        one record each: no object per socket.
        """
        out: dict[TcpState, list[Connection]] = defaultdict(list)
        for c in self.sockets:
            out[c.state].append(c)
        size = self.facts.ephemeral_ports
        if self.tally is not None and size:
            tw: list[Connection] = []
            for g in self.tally.groups:
                if g.sockets / size < self.needs.thresholds.time_wait_ratio:
                    break  # largest first
                example = Connection(g.family, TcpState.TIME_WAIT, g.source, g.local_port,
                                     g.remote_address, g.remote_port, 0, 0, 0, 0,
                                     Timer.TIME_WAIT, 0, 0)
                tw += [example] * g.sockets
            if tw:
                out[TcpState.TIME_WAIT] = tw
        return out

    def rates(self, earlier: Sample) -> Rates:
        """Return what changed since ``earlier`` (SYN_RECV per port only where both have all)."""
        assert self.sample is not None
        rates = self.sample.rates(earlier)
        if not (_syn_recv_known(earlier) and _syn_recv_known(self.sample)):
            rates = dataclasses.replace(rates, syn_recv=MappingProxyType({}))
        return rates

    def findings(self, thresholds: Thresholds, rates: Rates | None = None) -> list[Finding]:
        """Run every rule in RULES over this look (the time rules against ``rates``)."""
        by_state = self.by_state()
        conns = [c for v in by_state.values() for c in v]
        snap = Snapshot(conns, by_state, self.facts, owners=self.owners, sample=self.sample,
                        rates=rates, closes=self.closes if rates is not None else None)
        return [f for rule in RULES for f in rule.check(rule, snap, thresholds)]


#: The files every look reads, in one trip: every file the Counters read (their sysctls
#: include the ones the rules weigh).
LOOK_FILES: Final = _host.COUNTER_FILES


def look(netns: NetnsArg = None, needs: Needs | None = None, *,
         owners: OwnerCache | None = None, describe: bool = True,
         strict: bool = True, feed: CloseFeed | None = None) -> Look:
    """Take one look at a network namespace: opened once, its files read in one trip, dumped.

    ``netns``: as ``connections(netns=)`` takes it (a name, path or pid is described from
    the descriptor the look opened, with ``namespaces.describe``); the namespace is entered
    once, by one native trip that reads the files and runs every dump. ``needs``: what to
    decode (default: every socket, with tcp_info). ``owners``: the OwnerCache the look's
    owner lookups share (a look of several namespaces, a long-lived exporter); by default
    the one ``shared_owners()`` set, else the look's own. Failing to open or enter the
    namespace raises; other failures raise too, unless ``strict=False`` (the exporter's scan):
    they are then said in ``errors`` and the look goes on without that part.
    ``describe=False``: a name, path or pid is not described (``Look.netns`` None; no census,
    the namespace opened only once), as the exporter, which labels namespaces itself, asks.
    ``feed``: a closed-connection log this look drives (its subscriber made on the way in,
    the first time; the dumps' cookies listed; its closes read into ``Look.closes``).
    """
    n = Needs() if needs is None else needs
    errors: list[str] = []
    start, wall = time.monotonic(), time.time()
    with opened(netns) as target:
        inode = (os.fstat(target.fd) if target is not None
                 else os.stat("/proc/thread-self/ns/net")).st_ino
        ns: NetNamespace | None = None
        if target is not None and netns is not None:
            # Described from the descriptor already open: the census stats, it opens nothing.
            ns = (netns if isinstance(netns, NetNamespace)
                  else namespaces.describe(netns, inode) if describe else None)
        if feed is not None:
            feed.entered(target, inode, ns)  # its subscriber, made on the first look's way in
        # ONE trip into the namespace: the files, then every dump into its sink; what the
        # sinks hold is decoded and counted below, in this thread.
        got = trip(target, LOOK_FILES, _dumps(n), netns=ns)
    texts, counters, facts = _host_of(got.files, errors, strict)
    low, high = facts.ip_local_port_range or (0, 0)
    listeners: list[Connection] = []
    sockets: list[Connection] = []
    counts: dict[TcpState, int] | None = None
    tallied: Tally | None = None
    now: Sample | None = None
    try:
        if got.error is not None:
            raise got.error
        if n.sockets == "every":
            (dump,) = got.dumps
            if feed is not None:
                feed.listed(inode, dump)
            sockets = dump.connections()
            # The Sample counts and sorts them once; the look takes its counts.
            now = of_connections(sockets, counters, port=n.port, start=start, wall=wall)
            listeners, counts = list(now.listeners), dict(now.counts)
        else:
            # Listeners in a dump of their own (few, with their drop counts), as
            # connections() lists them; everything else is counted in C.
            listening, rest = got.dumps
            listeners = listening.connections()
            if n.sockets == "rules":
                if feed is not None:
                    feed.listed(inode, rest)  # before the tally compacts the records
                counts, tallied, kept = tally(n, rest, listeners, low, high)
                sockets = listeners + kept
            else:
                # Counted while the dump was read, no record kept (a third of the time of a
                # kept dump at 100k sockets).
                counts = {s: c for s, c in rest.counts().items() if c}
                counts.pop(TcpState.LISTEN, None)
                sockets = list(listeners)
            counts[TcpState.LISTEN] = len(listeners)
    except OSError as err:
        if strict:
            raise
        errors.append(f"the socket dump: {err}")
    if texts[_host.COUNTER_FILES[0]] is None or texts[_host.COUNTER_FILES[1]] is None:
        errors.append("the TCP counters (/proc/net/netstat, /proc/net/snmp) are missing")
    if counts is not None and n.sockets != "every":
        now = _sample(n, counts, listeners, sockets, tallied, counters, start, wall)
    book = OwnerBook(owners)
    closes = None if feed is None else feed.observe(
        inode, counts is not None and n.sockets != "counts", listeners)
    return Look(ns, inode, n, counters, facts, tuple(listeners), tuple(sockets),
                None if counts is None else MappingProxyType(counts), tallied, now,
                tuple(errors), book, closes)


def _dumps(n: Needs) -> list[DumpSpec]:
    """Return the dumps of one look, in the order its trip runs them (see ``Needs.sockets``)."""
    if n.sockets == "every":
        return [DumpSpec(None, n.port, n.with_info)]
    listening = DumpSpec(TcpState.LISTEN, n.port)
    if n.sockets == "rules":
        return [listening, DumpSpec(_NOT_LISTENING, n.port, with_info=True)]
    return [listening, DumpSpec(_NOT_LISTENING, n.port, keep=False)]


def _host_of(files: Sequence[bytes | OSError], errors: list[str],
             strict: bool) -> tuple[dict[str, str | None], Counters, HostFacts]:
    """Return ``LOOK_FILES``' texts (None: absent), the Counters and HostFacts, from a read."""
    texts = _read_proc(LOOK_FILES, files, errors, strict)
    counters = Counters.read(lambda paths: [texts[p] for p in paths])
    return texts, counters, HostFacts(counters)


def read_host(target: Entered | None, errors: list[str], *,
              strict: bool) -> tuple[dict[str, str | None], Counters, HostFacts]:
    """Read every file of ``LOOK_FILES`` in one trip into ``target`` (None: the caller's).

    Returns each file's text (None: absent or unreadable), the Counters and the HostFacts.
    A file that exists but could not be read raises when ``strict``, else is said in
    ``errors``; failing to enter the namespace raises either way.
    """
    return _host_of(read_files(target, LOOK_FILES), errors, strict)


def sockets_needed(timed: bool) -> Sockets:
    """Return which sockets the rules that apply need decoded, from their picks.

    ``timed``: the time rules apply too (an interval or an earlier sample). ``every`` when
    one of them picks every socket (the ports in use per destination), else ``rules``: the
    rest is counted in C, and a look costs what a scrape does.
    """
    applying = [r for r in RULES if timed or not r.interval]
    every = any(p.state is None and not p.grouped for r in applying for p in r.picks)
    return "every" if every else "rules"


def _read_proc(paths: Sequence[str], results: Sequence[bytes | OSError],
               errors: list[str], strict: bool) -> dict[str, str | None]:
    """Return each file's text from what ``read_files`` gave (bytes or OSError); None if absent.

    A file that exists but could not be read (EMFILE, EIO...) raises when ``strict``, else
    is None too, and said in ``errors``.
    """
    texts: dict[str, str | None] = {}
    for path, got in zip(paths, results, strict=True):
        if isinstance(got, OSError):
            if got.errno not in _host.ABSENT:
                if strict:
                    raise got
                errors.append(f"reading {path}: {got.strerror or got}")
            texts[path] = None
        else:
            texts[path] = got.decode("ascii", "replace")
    return texts


def _sample(n: Needs, counts: Mapping[TcpState, int], listeners: Sequence[Connection],
            sockets: Sequence[Connection], tallied: Tally | None, counters: Counters,
            start: float, wall: float) -> Sample:
    """Return a look that did not decode every socket as a Sample.

    ``rules``: ``close_wait`` is every CLOSE_WAIT socket (always picked); ``syn_recv`` per
    port only when the SYN_RECV sockets were decoded (a pile at the threshold) or there are
    none, else partial (see ``Look.rates``); ``ports`` per destination as the C tally grouped
    them. ``counts``: none of those.
    """
    total = {s: c for s, c in sorted(counts.items()) if c}
    if n.sockets == "counts":
        return Sample((start + time.monotonic()) / 2, wall, n.port, MappingProxyType(total),
                      tuple(listeners), counters)
    close_wait = tuple(c for c in sockets if c.state is TcpState.CLOSE_WAIT)
    syn_recv = Counter(c.local_port for c in sockets if c.state is TcpState.SYN_RECV)
    ports = None if tallied is None or tallied.ports is None else MappingProxyType(tallied.ports)
    return Sample((start + time.monotonic()) / 2, wall, n.port, MappingProxyType(total),
                  tuple(listeners), counters, close_wait, MappingProxyType(dict(syn_recv)),
                  ports)


def _syn_recv_known(s: Sample) -> bool:
    """Whether ``s.syn_recv`` has every SYN_RECV socket (not only a count below threshold)."""
    return sum((s.syn_recv or {}).values()) == s.counts.get(TcpState.SYN_RECV, 0)


def sample(*, port: int | None = None, detail: bool = True, netns: NetnsArg = None) -> Sample:
    """Take one Sample of the host's TCP sockets and counters, now (one look).

    ``port``: only sockets whose local or remote port is ``port`` (the counters are the
    whole network namespace's regardless). ``detail=False`` skips the per-socket decoding
    (no close_wait, syn_recv, ports): counts are made in C, listeners dumped on their own,
    and nothing costs a Python object per socket. Sees the calling thread's namespace, or
    ``netns`` (as in ``connections``), counters included: they are read from inside it.
    Compare only samples taken with the same ``port`` and ``netns``.
    """
    if not isinstance(detail, bool):
        raise InvalidConfigError("detail", detail, "True or False")
    taken = look(netns, Needs("every" if detail else "counts", port, with_info=False))
    assert taken.sample is not None  # a look that is not the exporter's raises instead
    return taken.sample


# --- the C tally: counts of what a rules look does not decode


#: Sockets counted for a metric without being read (the keepalive coverage gauge).
COUNTED: Final[Mapping[str, Pick]] = MappingProxyType({
    "keepalive": Pick(TcpState.ESTABLISHED, timer=Timer.KEEPALIVE),
})

#: Every state ``ss -a`` asks for but LISTEN: the sockets the C tally counts. Never
#: BOUND_INACTIVE: asking for it makes each dump walk the host's whole bind hash table (bound
#: sockets of every namespace; 7 ms instead of 0.05 with 120k of them) to report bound-only
#: sockets, as CLOSE, which connections() does not list.
_NOT_LISTENING: Final[tuple[TcpState, ...]] = tuple(
    s for s in TcpState
    if s not in (TcpState.LISTEN, TcpState.NEW_SYN_RECV, TcpState.BOUND_INACTIVE))

TCP_INFO_OFFSETS: Final = {f.name: f.offset for f in TCP_INFO_FIELDS}

#: A pick that takes any pending timer (csrc/tally.h).
_ANY_TIMER: Final = lib.PSO_TALLY_ANY_TIMER


def _narrowed(p: Pick) -> bool:
    return p.timer is not None or p.retrans is not None or p.idle is not None


def scraped_rules() -> tuple[Rule, ...]:
    """Return the rules a ``rules`` look can feed: all but those needing every socket."""
    return tuple(r for r in RULES if all(p.state is not None or p.grouped for p in r.picks))


def keep_states(counts: Mapping[TcpState, int], t: Thresholds) -> int:
    """Return the states a ``rules`` look keeps whole (a bit per state), from the picks.

    A pick of a whole state keeps it always, or, with a ``pile``, once the state's count
    reaches that threshold (a smaller pile cannot fire); listeners have their own dump and
    grouped states are counted in C.
    """
    mask = 0
    for rule in scraped_rules():
        for p in rule.picks:
            if p.state is None or p.state is TcpState.LISTEN or p.grouped or _narrowed(p):
                continue
            if p.pile is None or counts.get(p.state, 0) >= getattr(t, p.pile):
                mask |= 1 << p.state
    return mask


def tally_picks(t: Thresholds) -> list[tuple[str, Pick, bool]]:
    """Return the C tally's predicates: (name, pick, keep), computed from RULES.

    One for each narrowed pick of a rule (kept: the rule reads them) and each ``COUNTED``
    one (only counted).
    """
    out = [(rule.code, p, True) for rule in scraped_rules() for p in rule.picks
           if p.state is not None and _narrowed(p)]
    out += [(name, p, False) for name, p in COUNTED.items()]
    if len(out) > lib.PSO_TALLY_MAX_PICKS:  # pragma: no cover - a table edit
        raise ValueError(f"{len(out)} tally picks, csrc/tally.h allows "
                         f"{lib.PSO_TALLY_MAX_PICKS}")
    return out


def tally_spec(t: Thresholds, keep: int, ports: Sequence[int] = (), low: int = 0,
               high: int = 0) -> tuple[object, list[str]]:
    """Return the cffi ``struct pso_tally_spec *`` for ``t`` and the names of its picks."""
    spec = ffi.new("struct pso_tally_spec *")
    for i, port in enumerate(ports):
        spec.ports[i] = port
    spec.nports = len(ports)
    spec.keep_states = keep
    names = []
    for i, (name, p, kept) in enumerate(tally_picks(t)):
        c = spec.picks[i]
        c.states = 1 << p.state if p.state is not None else 0
        c.timer = _ANY_TIMER if p.timer is None else int(p.timer)
        c.retrans_min = 0 if p.retrans is None else int(getattr(t, p.retrans))
        if p.idle is not None:
            c.info_min = min(int(getattr(t, p.idle) * 1000), 2**32 - 1)
            if len(p.info) > lib.PSO_TALLY_MAX_INFO:  # pragma: no cover - a table edit
                raise ValueError(f"{name}: more tcp_info fields than csrc/tally.h allows")
            for k, fname in enumerate(p.info):
                c.info_off[k] = TCP_INFO_OFFSETS[fname]
            c.ninfo = len(p.info)
        c.keep = 1 if kept else 0
        names.append(name)
    spec.npicks = len(names)
    spec.eph_low, spec.eph_high = low, high
    return spec, names


def tally(n: Needs, dump: NativeDump, listeners: list[Connection], low: int,
          high: int) -> tuple[dict[TcpState, int], Tally, list[Connection]]:
    """Count one dump of every socket but the listeners in C (csrc/tally.c).

    Returns the counts per state, the Tally, and the sockets the rules pick, decoded (the
    only ones).
    """
    t = n.thresholds
    raw = dump.counts()
    spec, names = tally_spec(t, keep_states(raw, t), n.ports, low, high)
    for c in listeners:
        spec.listening[c.local_port >> 3] |= 1 << (c.local_port & 7)  # type: ignore[attr-defined]
    out = new_tally()
    rc = lib.pso_tally(dump.sink, spec, out)
    if rc:
        raise os_error(rc, "tallying the sock_diag dump")
    counts: dict[TcpState, int] = {s: raw[s] for s in _NOT_LISTENING}
    port_counts: dict[int, dict[TcpState, int]] = {}
    for i, p in enumerate(n.ports):
        row = out.port_counts[i]
        per: dict[TcpState, int] = {s: int(row[s]) for s in _NOT_LISTENING}
        per[TcpState.LISTEN] = sum(1 for c in listeners if c.local_port == p)
        port_counts[p] = per
    size = high - low + 1 if high else 0
    groups, ports = _groups(out, n.top, t.time_wait_ratio * size if size else float("inf"),
                            _WANTS_PORTS)
    picked = {name: int(out.picked[i]) for i, name in enumerate(names)}
    return (counts, Tally(port_counts, groups, int(out.tw_grouped), picked, ports),
            dump.connections())


#: Whether a rule reads the ports in use per destination (grouped in C: every group decoded).
_WANTS_PORTS: Final = any(p.state is None and p.grouped for r in RULES for p in r.picks)

#: struct pso_dest_group, field for field (csrc/tally.h); checked against the build at import.
_GROUP: Final = struct.Struct("=16s16sIIIHHB3x")
if (_GROUP.size != ffi.sizeof("struct pso_dest_group")
        or ffi.offsetof("struct pso_dest_group", "family") != 48):  # pragma: no cover
    raise ImportError("pysockopt._native does not match host/look.py (struct pso_dest_group)")


def _groups(tally: object, top: int, threshold: float,
            ports: bool) -> tuple[list[TimeWaitGroup], dict[Destination, PortCount] | None]:
    """Decode the groups: TIME_WAIT ones shown or that can fire, and the ports in use.

    TIME_WAIT groups: the ``top`` and every one of ``threshold`` or more; with ``ports``,
    every destination's ports in use too.
    """
    n = tally.ngroups  # type: ignore[attr-defined]
    out: list[TimeWaitGroup] = []
    used: dict[Destination, PortCount] | None = {} if ports else None
    if not n:
        return out, used
    raw = ffi.buffer(tally.groups, n * _GROUP.size)  # type: ignore[attr-defined]
    ntop = socket.inet_ntop
    for i in range(n):
        src, dst, tw, in_use, tw_out, dport, sport, family = _GROUP.unpack_from(
            raw, i * _GROUP.size)
        shown = tw and (i < top or tw >= threshold)
        if not shown and used is None:
            break  # most TIME_WAIT first: nothing further is shown or can fire
        fam = socket.AF_INET if family == socket.AF_INET else socket.AF_INET6
        width = 4 if fam == socket.AF_INET else 16
        source, remote = ntop(fam, src[:width]), ntop(fam, dst[:width])
        if shown:
            out.append(TimeWaitGroup(fam, source, remote, dport, sport, tw))
        if used is not None and in_use:
            used[Destination(fam, source, remote, dport)] = PortCount(in_use, tw_out)
    return out, used


# --- the exporter's scan: a rules look and what the metrics read of it


@dataclass(frozen=True, slots=True)
class Scan:
    """What one scrape saw of one namespace; None (or empty) where that part failed."""

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
    #: (address, port) -> listen drops carried over restarted listeners (the exporter's)
    listen_drops: Mapping[tuple[str, int], int] | None = None
    #: metric name -> a kernel counter carried over a namespace made again (the exporter's)
    counter_totals: Mapping[str, int] | None = None


def scan(options: Needs, netns: NetnsArg = None, last: Mapping[int, Sample] | None = None,
         owners: OwnerCache | None = None, feed: CloseFeed | None = None) -> Scan:
    """Take the one look a scrape needs of one namespace (the only place a scrape reads it).

    A ``rules`` look (``options``, whatever its ``sockets``): failing to open or enter the
    namespace raises; failures inside it are the scan's ``errors``. ``last``: the previous
    scrape's sample per namespace inode, which the time rules compare this one with (none on
    a namespace's first scrape); ``owners``: the collector's OwnerCache; ``feed``: its
    closed-connection log (``look(feed=)``).
    """
    lk = look(netns, dataclasses.replace(options, sockets="rules"), owners=owners,
              describe=False, strict=False, feed=feed)
    errors = list(lk.errors)
    owner_map: dict[str, int] | None = None
    found: list[Finding] | None = None
    now, tallied, counts = lk.sample, lk.tally, lk.counts
    if counts is not None and counts.get(TcpState.CLOSE_WAIT):
        owner_map = owner_counts(lk.owners, [c for c in lk.sockets
                                             if c.state is TcpState.CLOSE_WAIT], options.top)
    if now is not None:
        earlier = (last or {}).get(lk.inode)
        rates = lk.rates(earlier) if earlier is not None and now.time > earlier.time else None
        try:
            found = lk.findings(options.thresholds, rates)
        except OSError as err:
            errors.append(f"the diagnosis: {err}")
    size = lk.facts.ephemeral_ports
    return Scan(
        counts, tallied.port_counts if tallied else {}, lk.listeners if counts else [],
        owner_map, tallied.groups if tallied else [], tallied.time_wait if tallied else 0,
        size, tallied.picked["keepalive"] if tallied else None,
        tallied.picked["IDLE_NO_KEEPALIVE"] if tallied else None, lk.counters, found,
        tuple(errors), lk.inode, now)


#: The owner labels that are not a command name: a process may call itself either.
_BUCKETS: Final = frozenset({"other", "unknown"})


def owner_counts(book: OwnerBook, close_wait: Sequence[Connection], top: int) -> dict[str, int]:
    """CLOSE_WAIT sockets per owning command name: top ``top``, then other and unknown."""
    found = book.lookup(close_wait)
    by_command: Counter[str] = Counter()
    unknown = 0
    for c in close_wait:
        procs = found.get(c.inode) if c.inode else ()
        if procs:
            # A socket held by several processes (inherited across fork) counts once, for
            # the first command name in sort order: the same owner every scrape.
            by_command[label(min(p.command for p in procs), _BUCKETS.__contains__)] += 1
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
