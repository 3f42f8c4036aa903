"""Samples of the host's TCP sockets and counters, and the rates between two of them.

A snapshot cannot tell a slow CLOSE_WAIT leak from an old pile, nor drops happening now from a
burst last week (the kernel's drop counters are cumulative). ``sample()`` takes one look at
one moment: counts per state, every listener with its accept queue, backlog and drop count,
the host counters (/proc/net/netstat TcpExt, /proc/net/snmp Tcp, /proc/net/sockstat, the
sysctls they are weighed against, conntrack), and, unless ``detail=False``, what the time
rules need per socket group (CLOSE_WAIT sockets, SYN_RECV per port, ports in use per
destination). ``later.rates(earlier)`` turns two samples into deltas and per-second rates.

Cost: ``detail=False`` is two netlink dumps (counts in C, then the listeners only) and three
small /proc reads, no Python object per socket: what a metrics exporter takes per scrape.
``detail=True`` (the default) is one dump decoded into Connections (~1 us per socket).
"""

from __future__ import annotations

import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple, TypeVar

from .. import _host
from .._format import endpoint
from .._host import Counters
from ..errors import InvalidConfigError
from ..tcpinfo import TcpState
from .connections import Connection
from .namespaces import Entered, NetnsArg, opened, read_files

T = TypeVar("T")

__all__ = [
    "Change",
    "Counters",
    "Destination",
    "ListenerDrops",
    "OwnerGrowth",
    "PortCount",
    "PortUse",
    "Rates",
    "Sample",
    "read_counters",
]


# --- one moment


class Destination(NamedTuple):
    """Where outgoing connections go from one local address.

    Each (local address, destination) pair has the whole ephemeral port range
    (net.ipv4.ip_local_port_range) to itself.
    """

    family: socket.AddressFamily
    local_address: str
    remote_address: str
    remote_port: int

    @property
    def remote(self) -> str:
        """``address:port`` of the destination, as ``ss`` prints it."""
        return endpoint(self.family, self.remote_address, self.remote_port)


class PortCount(NamedTuple):
    """Local ephemeral ports held towards one destination, and how many of those in TIME_WAIT."""

    in_use: int
    time_wait: int


@dataclass(frozen=True, slots=True)
class Sample(_host.Pickles):
    """One look at the host's TCP sockets and counters; compare two with ``rates()``.

    ``time`` is ``time.monotonic()`` at the middle of the look (rates divide by differences
    of it), ``wall`` the ``time.time()`` of the same moment (for display). ``port``: the
    filter it was taken with (the counters are always the whole namespace's). ``counts``:
    sockets per state (states with none left out). ``listeners``: every LISTEN socket, whose
    ``accept_queue``, ``backlog`` and ``drops`` (cumulative since that socket started
    listening) are what the kernel said. ``counters``: see Counters.

    With ``detail`` (else None): ``close_wait``, every CLOSE_WAIT socket; ``syn_recv``, the
    SYN_RECV count per local port; ``ports``, the ephemeral local ports held per
    Destination by sockets that are not a listener's.
    """

    time: float
    wall: float
    port: int | None
    counts: Mapping[TcpState, int]
    listeners: tuple[Connection, ...]
    counters: Counters
    close_wait: tuple[Connection, ...] | None = None
    syn_recv: Mapping[int, int] | None = None
    ports: Mapping[Destination, PortCount] | None = None

    @property
    def total(self) -> int:
        """Sockets counted."""
        return sum(self.counts.values())

    @property
    def detail(self) -> bool:
        """Whether the per-socket-group fields (close_wait, syn_recv, ports) were taken."""
        return self.close_wait is not None

    def rates(self, earlier: Sample) -> Rates:
        """Return what changed from ``earlier`` to this sample, in deltas and per second."""
        return _rates(earlier, self)

    def as_dict(self) -> dict[str, object]:
        """Return the sample for JSON (per-socket lists are summarised, not listed)."""
        data: dict[str, object] = {
            "time": self.time, "wall": self.wall, "port": self.port,
            "counts": {s.label: n for s, n in self.counts.items()},
            "listeners": [_listener_dict(c) for c in self.listeners],
            "counters": self.counters.as_dict(),
        }
        if self.ports is not None:
            top = sorted(self.ports.items(), key=lambda kv: -kv[1].in_use)[:10]
            data["ports_in_use"] = [
                {"local_address": d.local_address, "remote": d.remote, "in_use": p.in_use,
                 "time_wait": p.time_wait} for d, p in top]
        return data


def _listener_dict(c: Connection) -> dict[str, object]:
    return {"local": c.local, "accept_queue": c.accept_queue, "backlog": c.backlog,
            "drops": c.drops, "inode": c.inode}


def read_counters(netns: NetnsArg = None) -> Counters:
    """Read the host counters of the caller's namespace, or of ``netns`` from inside it."""
    with opened(netns) as target:
        if target is None:
            return Counters.read()
        return Counters.read(_reader(target))


def _reader(target: Entered) -> _host.Reader:
    def read(paths: Sequence[str]) -> list[str | None]:
        # One native thread in the namespace reads them all; a file it lacks is None.
        return [t.decode("ascii", "replace") if isinstance(t, bytes) else None
                for t in read_files(target, paths)]

    return read


def of_connections(conns: Sequence[Connection], counters: Counters, *, port: int | None,
                   start: float, wall: float) -> Sample:
    """Build a detailed Sample from one listing (diagnose reuses its own listing)."""
    # Counter() over a generator counts in C: this runs once per socket, so no Python-level
    # loop body per socket here (~0.1 us per socket instead of ~2 us).
    counts = Counter(c.state for c in conns)
    listen, close_wait, syn_recv_state = TcpState.LISTEN, TcpState.CLOSE_WAIT, TcpState.SYN_RECV
    listeners = tuple(c for c in conns if c.state is listen)
    waiting = tuple(c for c in conns if c.state is close_wait)
    syn_recv = Counter(c.local_port for c in conns if c.state is syn_recv_state)
    listening = {c.local_port for c in listeners}
    ports: dict[Destination, PortCount] = {}
    r = counters.ip_local_port_range
    if r is not None:
        low, high = r
        not_outgoing = _NOT_OUTGOING
        # A client's socket: on an ephemeral port that no listener serves. SYN_RECV
        # entries are a server's, on its listening port.
        mine = [c for c in conns if low <= c.local_port <= high
                and c.local_port not in listening and c.state not in not_outgoing]
        in_use = Counter((c.family, c.local_address, c.remote_address, c.remote_port)
                         for c in mine)
        tw = TcpState.TIME_WAIT
        time_wait = Counter((c.family, c.local_address, c.remote_address, c.remote_port)
                            for c in mine if c.state is tw)
        ports = {Destination(*k): PortCount(n, time_wait[k]) for k, n in in_use.items()}
    return Sample((start + time.monotonic()) / 2, wall, port,
                  MappingProxyType(dict(sorted(counts.items()))), listeners, counters,
                  waiting, MappingProxyType(dict(syn_recv)), MappingProxyType(ports))


_NOT_OUTGOING: Final = frozenset({TcpState.LISTEN, TcpState.SYN_RECV, TcpState.NEW_SYN_RECV,
                                  TcpState.CLOSE})


# --- two moments


class Change(NamedTuple):
    """How much a value moved between two samples: ``delta`` and ``per_second``."""

    delta: int
    per_second: float


@dataclass(frozen=True, slots=True)
class ListenerDrops(_host.Pickles):
    """A listener of the later sample and the connection attempts it dropped in between.

    ``restarted``: the socket is new since the earlier sample (another inode on that
    address), or its counter went down; its whole count is then the interval's.
    """

    listener: Connection
    drops: int
    per_second: float
    restarted: bool


@dataclass(frozen=True, slots=True)
class OwnerGrowth(_host.Pickles):
    """How one owner's CLOSE_WAIT sockets grew between two samples.

    The owner is ``uid`` with ``port`` (a listening local port: the server side) or with
    ``remote`` (a destination: the client side), or ``uid`` alone (port and remote None)
    over all its sockets. ``new``: sockets present now that were not before; ``gone``:
    how many of those before are not there any more (closed at last: churn, not a leak).
    """

    uid: int
    port: int | None
    remote: str | None
    before: int
    now: int
    new: tuple[Connection, ...]
    gone: int
    seconds: float

    @property
    def delta(self) -> int:
        """Net growth: sockets now minus sockets before (closed ones count against it)."""
        return self.now - self.before

    @property
    def per_second(self) -> float:
        """Net growth per second."""
        return self.delta / self.seconds


@dataclass(frozen=True, slots=True)
class PortUse(_host.Pickles):
    """Ephemeral ports held towards one destination, before and now, and how fast that grew."""

    destination: Destination
    before: int
    now: int
    time_wait: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Net growth of ports in use per second (new connections minus ports freed)."""
        return (self.now - self.before) / self.seconds


@dataclass(frozen=True, slots=True)
class Rates(_host.Pickles):
    """What changed between two samples, ``seconds`` apart.

    ``counters`` (``"TcpExt.ListenDrops"``, ``"Tcp.RetransSegs"``, ...): cumulative
    counters; their deltas are never negative: a counter that wrapped is unwrapped, one
    that went down otherwise (reset) counts from zero, an unknown one is left out.
    ``gauges``: values that go up and down (``"sockstat.tw"``, ``"Tcp.CurrEstab"``,
    ``"nf_conntrack_count"``); ``states``: the socket count per state, signed as well.
    ``listeners``: drops per listener of the later sample; ``close_wait``: CLOSE_WAIT growth
    per owner, ``ports``: ports in use per destination, ``syn_recv``: SYN_RECV per port —
    those three only when both samples have detail (else empty).
    """

    seconds: float
    earlier: Sample
    later: Sample
    states: Mapping[TcpState, Change]
    counters: Mapping[str, Change]
    gauges: Mapping[str, Change]
    listeners: tuple[ListenerDrops, ...]
    close_wait: tuple[OwnerGrowth, ...]
    ports: tuple[PortUse, ...]
    syn_recv: Mapping[int, Change]

    def counter(self, name: str) -> Change | None:
        """Return one counter's change (``"TcpExt.SyncookiesSent"``), or None if unknown."""
        return self.counters.get(name)

    def as_dict(self) -> dict[str, object]:
        """Return the rates for JSON (rounded to 3 decimals)."""
        def ch(c: Change) -> dict[str, object]:
            return {"delta": c.delta, "per_second": round(c.per_second, 3)}

        return {
            "seconds": round(self.seconds, 3),
            "states": {s.label: ch(c) for s, c in self.states.items()},
            "counters": {k: ch(c) for k, c in self.counters.items()},
            "gauges": {k: ch(c) for k, c in self.gauges.items()},
            "listeners": [{"local": d.listener.local, "drops": d.drops,
                           "per_second": round(d.per_second, 3), "restarted": d.restarted}
                          for d in self.listeners],
        }


#: Bits of the kernel's counters: /proc prints unsigned longs; sock_diag drops are 32 bits.
_PROC_BITS: Final = 64
_DROPS_BITS: Final = 32


def counter_delta(before: int, now: int, bits: int = _PROC_BITS) -> tuple[int, bool]:
    """Return (how much a cumulative counter grew, whether it restarted).

    A counter that went down either wrapped (past 2**bits - 1: the modular difference is
    small) or was reset (a new socket or namespace: it counted from zero, so ``now`` is the
    growth). Never negative.
    """
    if now >= before:
        return now - before, False
    wrapped = (now - before) % (1 << bits)
    if wrapped < 1 << (bits - 1):
        return wrapped, False
    return now, True


def _rates(earlier: Sample, later: Sample) -> Rates:
    if not isinstance(earlier, Sample):
        raise TypeError(f"earlier must be a Sample, not {type(earlier).__name__}")
    seconds = later.time - earlier.time
    if not seconds > 0:
        raise InvalidConfigError("earlier", f"a sample {-seconds:.3f} s later",
                                 "a sample taken before this one")
    states = {s: _change(later.counts.get(s, 0) - earlier.counts.get(s, 0), seconds)
              for s in sorted(set(earlier.counts) | set(later.counts))}
    counters: dict[str, Change] = {}
    gauges: dict[str, Change] = {}
    for table, old, new in (("TcpExt", earlier.counters.tcp_ext, later.counters.tcp_ext),
                            ("Tcp", earlier.counters.tcp, later.counters.tcp)):
        for name, value in new.items():
            before = old.get(name)
            if value is None or before is None:
                continue
            key = f"{table}.{name}"
            if key in GAUGES:
                gauges[key] = _change(value - before, seconds)
            else:
                counters[key] = _change(counter_delta(before, value)[0], seconds)
    for name, value in later.counters.sockstat.items():
        before = earlier.counters.sockstat.get(name)
        if value is not None and before is not None:
            gauges[f"sockstat.{name}"] = _change(value - before, seconds)
    a, b = earlier.counters.conntrack_count, later.counters.conntrack_count
    if a is not None and b is not None:
        gauges["nf_conntrack_count"] = _change(b - a, seconds)
    # Each per-group comparison needs both samples to have that part: a sample that did not
    # decode every outgoing socket (the exporter's) has no ports, and comparing it with one
    # that has would count every destination as new.
    return Rates(
        seconds, earlier, later, MappingProxyType(states), MappingProxyType(counters),
        MappingProxyType(gauges), _listener_drops(earlier, later, seconds),
        _close_wait_growth(earlier, later, seconds)
        if earlier.close_wait is not None and later.close_wait is not None else (),
        _port_use(earlier, later, seconds)
        if earlier.ports is not None and later.ports is not None else (),
        MappingProxyType(_syn_recv(earlier, later, seconds)
                         if earlier.syn_recv is not None and later.syn_recv is not None
                         else {}))


#: Entries of the TcpExt and Tcp tables that are gauges, not counters.
GAUGES: Final = frozenset({"Tcp.CurrEstab"})


def _change(delta: int, seconds: float) -> Change:
    return Change(delta, delta / seconds)


def _listener_drops(earlier: Sample, later: Sample,
                    seconds: float) -> tuple[ListenerDrops, ...]:
    before = {c.inode: c for c in earlier.listeners if c.inode}
    out = []
    for c in later.listeners:
        if c.drops is None or not c.inode:  # /proc gives no drops, sock_diag always an inode
            continue
        old = before.get(c.inode)
        if old is None:
            # A socket the earlier sample did not see started listening in between (a
            # restarted server has a new socket): everything it counted is the interval's.
            drops, restarted = c.drops, True
        elif old.drops is None:
            continue
        else:
            drops, restarted = counter_delta(old.drops, c.drops, _DROPS_BITS)
        out.append(ListenerDrops(c, drops, drops / seconds, restarted))
    return tuple(out)


def _owner_keys(c: Connection, listening: set[int]) -> tuple[int, int | None, str | None]:
    if c.local_port in listening:
        return (c.uid, c.local_port, None)
    return (c.uid, None, endpoint(c.family, c.remote_address, c.remote_port))


def _close_wait_growth(earlier: Sample, later: Sample,
                       seconds: float) -> tuple[OwnerGrowth, ...]:
    assert earlier.close_wait is not None and later.close_wait is not None
    listening = {c.local_port for s in (earlier, later) for c in s.listeners}
    before_inodes = {c.inode for c in earlier.close_wait if c.inode}

    def groups(conns: Iterable[Connection]) -> dict[tuple[int, int | None, str | None],
                                                    list[Connection]]:
        g: dict[tuple[int, int | None, str | None], list[Connection]] = defaultdict(list)
        for c in conns:
            g[_owner_keys(c, listening)].append(c)
        return g

    old, new = groups(earlier.close_wait), groups(later.close_wait)
    out = []
    for key in sorted(set(old) | set(new), key=lambda k: (k[0], k[1] or 0, k[2] or "")):
        now = new.get(key, [])
        fresh = tuple(c for c in now if c.inode not in before_inodes)
        before = len(old.get(key, ()))
        uid, port, remote = key
        # Sockets now = before - gone + new.
        out.append(OwnerGrowth(uid, port, remote, before, len(now), fresh,
                               before - (len(now) - len(fresh)), seconds))
    # And per uid over everything: a client leaking one socket to each of many
    # destinations grows no single group above.
    old_uid = Counter(c.uid for c in earlier.close_wait)
    new_uid: dict[int, list[Connection]] = defaultdict(list)
    for c in later.close_wait:
        new_uid[c.uid].append(c)
    for uid in sorted(set(old_uid) | set(new_uid)):
        now = new_uid.get(uid, [])
        fresh = tuple(c for c in now if c.inode not in before_inodes)
        before = old_uid.get(uid, 0)
        out.append(OwnerGrowth(uid, None, None, before, len(now), fresh,
                               before - (len(now) - len(fresh)), seconds))
    return tuple(out)


def _port_use(earlier: Sample, later: Sample, seconds: float) -> tuple[PortUse, ...]:
    assert earlier.ports is not None and later.ports is not None
    out = []
    for dest, count in later.ports.items():
        before = earlier.ports.get(dest)
        out.append(PortUse(dest, before.in_use if before else 0, count.in_use,
                           count.time_wait, seconds))
    return tuple(sorted(out, key=lambda p: -p.per_second))


def _syn_recv(earlier: Sample, later: Sample, seconds: float) -> dict[int, Change]:
    assert earlier.syn_recv is not None and later.syn_recv is not None
    return {p: _change(later.syn_recv.get(p, 0) - earlier.syn_recv.get(p, 0), seconds)
            for p in sorted(set(earlier.syn_recv) | set(later.syn_recv))}

