"""The connections already gone: every TCP close the kernel announces, with why and who.

The kernel announces each TCP socket it frees on sock_diag's destroy groups (what ``ss -E``
reads): the 4-tuple, the socket cookie dumps also report, the state at free and the final
tcp_info. It says nothing of when the socket was born or who held it, so this module joins the
cookie with periodic looks (a dump of the namespace's sockets with their cookies and inodes,
and the owners of the new inodes from /proc): a close then carries its lifetime as an interval
the looks prove and the processes that held it. A cookie a look saw that vanished without an
announcement is a close the log missed: counted in ``lost``, as are the events the kernel
dropped when the receive buffer was full.

One subscriber per network namespace: the kernel sends a close only to the subscribers of the
socket's own namespace. Any user may subscribe to their own namespace (the kernel checks no
capability: a non-root user sees root's closes too); another namespace needs CAP_SYS_ADMIN to
enter.

``CloseStats`` folds closes into bounded counters (per port and verdict, a lifetime
histogram, bytes and retransmissions, short-lived churn per destination and owner, deaths per
peer, lost): what watch, the exporter and the rules read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import itertools
import math
import operator
import os
import select
import socket
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple, TypeVar

from .._core import ffi, lib, new_sink
from .._format import duration, endpoint
from .._sock import os_error
from ..errors import InvalidConfigError
from ..tcpinfo import TcpInfo, TcpState, tcp_info_fields
from .connections import (
    Connection,
    NativeDump,
    Process,
    Timer,
    connections,
    walk_owners,
)
from .namespaces import (
    Container,
    Entered,
    NetNamespace,
    NetnsArg,
    NetnsGoneError,
    NetnsPermissionError,
    NetnsSkipped,
    current_inode,
    entry_error,
    namespaces,
    opened,
    refusal_notes,
    resolve,
)
from .owners import OwnerCache

__all__ = [
    "LIFETIME_BUCKETS",
    "CloseFeed",
    "CloseStats",
    "CloseTotals",
    "ClosedConnection",
    "ClosedConnections",
    "Lifetime",
    "Verdict",
    "closed_connections",
    "verdict_of",
]


# --- what a close says


class Verdict(enum.Enum):
    """Why a connection ended, as far as its final tcp_info proves it (``verdict_of``).

    ``GAVE_UP``: the kernel gave up on the peer: keepalive probes or retransmissions were
    unanswered when it died (``probes``, ``retransmits``; ``total_rto``/``total_rto_time``).
    ``UNACKED_DATA``: it died with data the peer never acknowledged (the event's send queue:
    bytes written and not acknowledged, FIN excluded). ``RESET``: it ended without its FIN
    being acknowledged and without giving up: a reset sent or received — SOCK_DESTROY
    (``pysockopt kill``, ``ss -K``), the peer's RST, a close with unread data, SO_LINGER 0;
    tcp_info does not say which, the evidence says what it can. ``NORMAL``: its FIN was
    acknowledged, nothing unacknowledged. ``UNKNOWN``: nothing proves any of these (a
    listener, a socket that never connected).
    """

    GAVE_UP = "gave_up"
    UNACKED_DATA = "unacked_data"
    RESET = "reset"
    NORMAL = "normal"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class Lifetime(NamedTuple):
    """How long a connection lived, as the looks prove it: between ``at_least`` and ``at_most``.

    ``at_most`` is None when it already existed at the first look (born before the log
    started). ``at_least`` is 0 when no look saw it: born and gone between two looks, so only
    the bound is known (``upper_bound``). Seconds.
    """

    at_least: float
    at_most: float | None

    @property
    def upper_bound(self) -> bool:
        """True when only an upper bound is known (no look saw the connection)."""
        return self.at_least == 0 and self.at_most is not None

    @property
    def seconds(self) -> float:
        """One figure: the bound when only that is known (``upper_bound``), else ``at_least``.

        What the lifetime histogram counts; ``upper_bound`` says which it is.
        """
        return self.at_most if self.upper_bound and self.at_most is not None else self.at_least

    def __str__(self) -> str:
        if self.at_most is None:
            return f"over {duration(round(self.at_least, 3))}"
        if self.upper_bound:
            return f"under {duration(round(self.at_most, 3))}"
        return f"{duration(round(self.at_least, 3))}..{duration(round(self.at_most, 3))}"

    def as_dict(self) -> dict[str, object]:
        """Return the interval for JSON (``upper_bound`` included)."""
        return {"at_least": round(self.at_least, 6),
                "at_most": None if self.at_most is None else round(self.at_most, 6),
                "upper_bound": self.upper_bound}


#: The tcp_info fields a verdict reads, decoded with one unpack per close where the kernel
#: returned them all (offsets from the tcp_info table: the table decides, not this module).
_VERDICT_FIELDS: Final = ("probes", "retransmits", "backoff", "segs_out", "data_segs_out",
                          "total_retrans", "bytes_acked", "delivered", "bytes_sent",
                          "notsent_bytes", "total_rto", "total_rto_time")


def _verdict_struct() -> tuple[struct.Struct, int, operator.itemgetter[tuple[int, ...]]]:
    by_name = {f.name: f for f in tcp_info_fields()}
    chosen = sorted((by_name[n] for n in _VERDICT_FIELDS), key=lambda f: f.offset)
    fmt, pos = "=", 0
    for f in chosen:
        if f.bits is not None or f.offset < pos:
            raise ImportError(f"tcp_info field {f.name} is not a whole unit")
        fmt += f"{f.offset - pos}x" + {1: "B", 2: "H", 4: "I", 8: "Q"}[f.size]
        pos = f.end
    order = [f.name for f in chosen]
    return struct.Struct(fmt), pos, operator.itemgetter(*[order.index(n)
                                                          for n in _VERDICT_FIELDS])


_VERDICT, _VERDICT_END, _VERDICT_REORDER = _verdict_struct()


def _verdict_values(info: TcpInfo) -> tuple[int, ...] | None:
    """Return the verdict fields in _VERDICT_FIELDS order (None when the kernel lacks one)."""
    if info.size >= _VERDICT_END:
        fields: tuple[int, ...] = _VERDICT_REORDER(_VERDICT.unpack_from(info.raw))
        return fields
    values = [getattr(info, n) for n in _VERDICT_FIELDS]
    if values[6] is None or values[7] is None:  # bytes_acked, delivered: 4.18+
        return None
    return tuple(v or 0 for v in values)


def verdict_of(info: TcpInfo | None, *, wqueue: int = 0, rqueue: int = 0,
               remote_address: str = "", remote_port: int = 0
               ) -> tuple[Verdict, tuple[tuple[str, int], ...]]:
    """Return (verdict, evidence) for a close's final tcp_info and queues (see ``Verdict``).

    Measured on 6.18 (tests/test_closed.py stages each): a keepalive timeout leaves
    ``probes`` = the probe count; a user timeout with data in flight ``retransmits`` and
    ``total_rto_time`` (``unacked`` is 0: the kernel purges the write queue when it gives up;
    the unacknowledged bytes stay in the send queue); a clean close ``delivered`` = SYN + data
    segments + FIN; SOCK_DESTROY and a received RST alike an undelivered FIN; SO_LINGER 0
    resets the counters (tcp_disconnect) and the remote port.
    """
    if info is None:
        return Verdict.UNKNOWN, ()
    values = _verdict_values(info)
    if values is None:
        return Verdict.UNKNOWN, ()
    (probes, retransmits, backoff, segs_out, data_segs_out, total_retrans, acked, delivered,
     bytes_sent, notsent, total_rto, total_rto_time) = values
    unacked = wqueue - 1 if wqueue > 1 else 0  # a FIN queued or in flight counts 1
    if (remote_port == 0 and segs_out == 0 and acked == 0
            and remote_address not in ("", "0.0.0.0", "::")):
        # tcp_disconnect (SO_LINGER 0 close): counters zeroed, write_seq pushed past the
        # window, so the queues say nothing; the remote port was reset too.
        return Verdict.RESET, _COUNTERS_RESET
    if probes or retransmits:
        ev = [("probes", probes), ("retransmits", retransmits)]
        for name, value in (("backoff", backoff), ("total_rto", total_rto),
                            ("total_rto_time", total_rto_time)):
            if value:
                ev.append((name, value))
        if unacked:
            ev.append(("unacked_bytes", unacked))
        return Verdict.GAVE_UP, tuple(ev)
    if unacked:
        ev = [("unacked_bytes", unacked), ("bytes_sent", bytes_sent), ("bytes_acked", acked)]
        if notsent:
            ev.append(("notsent_bytes", notsent))
        return Verdict.UNACKED_DATA, tuple(ev)
    data_out = data_segs_out - total_retrans
    if delivered == 0 and data_out <= 0 and segs_out == 0:
        return Verdict.UNKNOWN, ()  # a listener, or a socket that never connected
    if delivered >= data_out + 2 and wqueue == 0:
        # SYN (or SYN-ACK) and FIN both delivered besides the data: the FIN was acknowledged.
        return Verdict.NORMAL, (("delivered", delivered), ("data_segs_out", data_segs_out))
    if rqueue > 1:  # rqueue counts a received FIN as 1
        return Verdict.RESET, (("delivered", delivered), ("data_segs_out", data_segs_out),
                               ("unread_bytes", rqueue - 1))
    return Verdict.RESET, (("delivered", delivered), ("data_segs_out", data_segs_out))


_COUNTERS_RESET: Final = (("counters_reset", 1),)


class ClosedConnection(NamedTuple):
    """One TCP connection the kernel freed, with its last tcp_info and what the looks add.

    The address fields are ``Connection``'s (``local`` / ``remote`` as ``ss`` prints them);
    ``state`` is the state at free (CLOSE for every full socket: the event comes as the socket
    is freed, or as it enters TIME_WAIT); ``last_state`` the state the last look saw (None when
    no look did). ``rqueue`` / ``wqueue``: bytes received and not read / written and not
    acknowledged at the end (a FIN counts 1). ``info``: the final TcpInfo (by the kernel's
    length). ``netns``: the namespace (None: the caller's own); ``time``: when it was read
    (``time.time()``); ``lifetime``: a Lifetime, None when no look bounds it; ``owner``: the
    processes that held it at a look (None when no look saw it or owners were not asked for);
    ``verdict`` / ``evidence``: see ``verdict_of``.
    """

    # A NamedTuple (immutable, no per-instance dict), not a frozen dataclass: the log builds
    # one per close, tens of thousands a second, and a tuple costs a fraction of one.
    family: socket.AddressFamily
    state: TcpState
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    cookie: int
    rqueue: int
    wqueue: int
    info: TcpInfo | None
    netns: NetNamespace | None
    time: float
    lifetime: Lifetime | None
    owner: tuple[Process, ...] | None
    verdict: Verdict
    evidence: tuple[tuple[str, int], ...] = ()
    last_state: TcpState | None = None

    @property
    def local(self) -> str:
        """``address:port`` as ``ss`` prints it (IPv6 in brackets)."""
        return endpoint(self.family, self.local_address, self.local_port)

    @property
    def remote(self) -> str:
        """``address:port`` of the peer (``*`` port for a listener)."""
        return endpoint(self.family, self.remote_address, self.remote_port)

    @property
    def container(self) -> Container | None:
        """The container of the connection's namespace, where its cgroups name one."""
        return None if self.netns is None else self.netns.container

    def as_dict(self) -> dict[str, object]:
        """Every field for JSON, with the keys ``Connection.as_dict`` uses for the same ones."""
        return {
            "family": "inet" if self.family == socket.AF_INET else "inet6",
            "state": self.state.label,
            "local_address": self.local_address,
            "local_port": self.local_port,
            "remote_address": self.remote_address,
            "remote_port": self.remote_port,
            "rqueue": self.rqueue,
            "wqueue": self.wqueue,
            "info": None if self.info is None else self.info.as_dict(),
            "netns": None if self.netns is None else self.netns.inode,
            "netns_name": None if self.netns is None else self.netns.name,
            "container": None if self.container is None else self.container.as_dict(),
            "cookie": self.cookie,
            "time": round(self.time, 6),
            "lifetime": None if self.lifetime is None else self.lifetime.as_dict(),
            "owner": None if self.owner is None else [
                {"pid": p.pid, "command": p.command} for p in self.owner],
            "verdict": self.verdict.value,
            "evidence": dict(self.evidence),
            "last_state": None if self.last_state is None else self.last_state.label,
        }


# --- one subscriber per namespace


#: States a look tracks: every full socket (each is announced when freed). TIME_WAIT and
#: request sockets are freed silently (and a TIME_WAIT entry's close was already announced).
_TRACKED: Final = tuple(s for s in TcpState
                        if s not in (TcpState.TIME_WAIT, TcpState.SYN_RECV,
                                     TcpState.NEW_SYN_RECV))

_STEP: Final = {
    lib.PSO_EV_STEP_SOCKET: "opening a NETLINK_SOCK_DIAG socket",
    lib.PSO_EV_STEP_BIND: "subscribing to the TCP destroy groups",
    lib.PSO_EV_STEP_RCVBUF: "raising the receive buffer",
}


_NETLINK_SOCK_DIAG: Final = 4
#: Announcements read per drain at most: under a flood, poll() still returns (and looks run)
#: between batches; what is left waits in the buffer, and the descriptor stays readable.
_DRAIN_MAX: Final = 16384
#: Owner walks that try to name a socket's owner before giving up on it.
_OWNER_TRIES: Final = 3
#: The share of the time owner walks may take by default: after a walk of /proc that took T
#: seconds, none for T * (1 / share - 1).
OWNER_SHARE: Final = 0.1

#: How many cookies counted lost (or announced) are remembered, in case an announcement comes
#: late (or a look still lists the cookie's timewait socket).
_MAX_DECLARED: Final = 65536


class _Seen(NamedTuple):
    look: int              # index of the first look that saw the cookie
    state: TcpState        # at the latest look
    inode: int
    owner: tuple[Process, ...] | None
    tries: int = 0         # owner walks that looked for it


class _Snapshot(NamedTuple):
    owners: bool
    settled: frozenset[int]      # cookies whose owner needs no walk
    suspects: frozenset[int]     # inodes of cookies a look already missed (the held check)
    walk: bool                   # whether a walk of /proc may run


class _Gathered(NamedTuple):
    start: float
    end: float
    conns: list[Connection]
    found: dict[int, tuple[Process, ...]]
    took: float
    walked: bool


def _open_here(rcvbuf: int) -> int:
    out = ffi.new("struct pso_ev_setup *")
    fd = lib.pso_ev_open(rcvbuf, out)
    if fd < 0:
        raise os_error(fd, _STEP.get(out.step, "subscribing to TCP closes"))
    return fd


def _open_in(ns: NetNamespace, rcvbuf: int) -> int:
    """Open a subscriber inside ``ns`` with the in-namespace runner (it stays bound there)."""
    with opened(ns) as target:
        if target is None:
            return _open_here(rcvbuf)
        step = ffi.new("int *")
        fd = lib.pso_netns_socket(target.fd, socket.AF_NETLINK, socket.SOCK_DGRAM,
                                  _NETLINK_SOCK_DIAG, step)
        if fd < 0:
            raise entry_error(fd, step[0], target)
    out = ffi.new("struct pso_ev_setup *")
    rc = lib.pso_ev_setup(fd, rcvbuf, out)
    if rc:
        os.close(fd)
        raise os_error(rc, f"{_STEP.get(out.step, 'subscribing')} in {ns.label}")
    return int(fd)


class _Follower:
    """One namespace's subscriber, its looks and what they saw (cookie -> _Seen)."""

    def __init__(self, ns: NetNamespace | None, fd: int, port: int | None,
                 owner_share: float = OWNER_SHARE) -> None:
        self.ns = ns
        self.owner_share = owner_share
        self.fd = fd
        self.port = port
        self.sink = new_sink(True)  # owned by ffi.gc
        self.mark = ffi.new("struct pso_sd_mark *")
        lib.pso_sd_sink_mark(self.sink, self.mark)
        self.buf = ffi.new("uint8_t[]", lib.PSO_EV_BUF)
        self.seen: dict[int, _Seen] = {}
        self.missing: dict[int, int] = {}   # cookie -> looks it has been missing from
        self.starts: list[float] = []       # monotonic start of each look
        self.ends: list[float] = []         # and end
        self.drops = 0                      # the kernel's drop count at the last read
        self.overflows = 0
        self.reconciled = 0
        self.next_walk = 0.0                # monotonic time before which no owner walk runs
        self.declared_lost: dict[int, None] = {}  # recent cookies counted lost, oldest first
        self.announced: dict[int, None] = {}      # recent cookies announced, oldest first

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def drain(self, limit: int = _DRAIN_MAX) -> list[Connection]:
        """Read what waits (non-blocking) and return it as records (listener rows included)."""
        out = ffi.new("struct pso_ev_drained *")
        rc = lib.pso_ev_drain(self.fd, self.sink, self.buf, lib.PSO_EV_BUF, limit, out)
        try:
            if rc:
                raise os_error(rc, f"reading TCP closes{self._where()}")
            self.overflows += int(out.overflows)
            # A new view per drain: decoding takes the sink's tcp_info blob (no copy) into
            # the records it returns, and the next drain's blob is a new one.
            return NativeDump(self.sink, self.ns).connections()
        finally:
            lib.pso_sd_sink_rollback(self.sink, self.mark)

    def kernel_drops(self) -> int:
        drops = ffi.new("uint64_t *")
        if lib.pso_ev_drops(self.fd, drops) == 0:
            self.drops = int(drops[0])
        return self.drops

    def _where(self) -> str:
        return "" if self.ns is None else f" in {self.ns.label}"

    def snapshot(self, owners: bool) -> _Snapshot:
        """Take what a look in another thread needs from this state (reading thread)."""
        settled = frozenset(k for k, v in self.seen.items()
                            if not owners or v.owner is not None or v.tries >= _OWNER_TRIES)
        suspects = frozenset(self.seen[k].inode for k in self.missing
                             if k in self.seen and self.seen[k].inode)
        return _Snapshot(owners, settled, suspects, time.monotonic() >= self.next_walk)

    def gather(self, snap: _Snapshot) -> _Gathered:
        """Dump the namespace and walk /proc for owners: no state touched (any thread)."""
        start = time.monotonic()
        conns = connections(states=_TRACKED, port=self.port, netns=self.ns)
        end = time.monotonic()
        inodes = set(snap.suspects)
        if snap.owners:
            inodes |= {c.inode for c in conns if c.inode and c.cookie not in snap.settled}
        if not inodes or not snap.walk:
            return _Gathered(start, end, conns, {}, 0.0, False)
        found = walk_owners(inodes).found
        return _Gathered(start, end, conns, found, time.monotonic() - end, True)

    def look(self, owners: bool) -> list[int]:
        """Look in this thread (snapshot, gather, apply); return the cookies counted lost."""
        return self.apply(self.gather(self.snapshot(owners)), owners)

    def apply(self, got: _Gathered, owners: bool) -> list[int]:
        """Fold a look into the state (reading thread); return the cookies counted lost."""
        start, end, conns, found, took, walked = got
        if walked:
            self.next_walk = time.monotonic() + took * (1 / self.owner_share - 1)
        index = len(self.starts)
        self.starts.append(start)
        self.ends.append(end)
        # A timewait socket keeps the full socket's cookie and is listed in its substate
        # (FIN_WAIT2 for an orphan that timed into it): the full socket was already freed and
        # announced, and the timewait one is freed silently. Its timer says which it is. An
        # announcement read while the look ran elsewhere is in ``announced`` too.
        now: dict[int, Connection] = {c.cookie: c for c in conns
                                      if c.cookie and c.timer != Timer.TIME_WAIT
                                      and c.cookie not in self.announced}
        # Owners of the sockets new to this look, and again of those earlier walks could not
        # name (an accepted socket has no inode while it waits in the accept queue, and a
        # socket can be listed a moment before its holder's /proc/PID/fd shows it).
        wanted = {k for k, c in now.items() if c.inode and (
            k not in self.seen or (self.seen[k].owner is None
                                   and self.seen[k].tries < _OWNER_TRIES))} if owners else set()
        # A cookie absent from this look was freed before it: its event may still be on its
        # way (the kernel sends it from a workqueue), so it counts as lost only when it is
        # still unannounced one look later.
        due = []
        for cookie in list(self.seen):
            if cookie in now:
                self.missing.pop(cookie, None)
                continue
            times = self.missing.get(cookie, 0) + 1
            self.missing[cookie] = times
            if times >= 2:
                due.append(cookie)
        for cookie, c in now.items():
            old = self.seen.get(cookie)
            owner = found.get(c.inode) or None if c.inode else None
            tried = int(walked and cookie in wanted)
            if old is None:
                self.seen[cookie] = _Seen(index, c.state, c.inode, owner, tried)
            elif old.state != c.state or tried:
                self.seen[cookie] = old._replace(state=c.state, inode=c.inode,
                                                 owner=old.owner or owner,
                                                 tries=old.tries + tried)
        # Gone from the dumps is not yet freed: a socket that was reset, destroyed or timed
        # out is unhashed (state CLOSE) while its owner still holds the descriptor, and is
        # announced only when that is closed. A socket some process still holds is not lost;
        # one whose holders were not walked this time waits for a walk.
        lost = []
        for cookie in due:
            inode = self.seen[cookie].inode
            if inode and (not walked or found.get(inode)):
                self.missing[cookie] = 1
                continue
            lost.append(cookie)
            del self.seen[cookie]
            del self.missing[cookie]
            self.declared_lost[cookie] = None
        while len(self.declared_lost) > _MAX_DECLARED:
            del self.declared_lost[next(iter(self.declared_lost))]
        self.reconciled += len(lost)
        return lost

    def lifetime(self, seen: _Seen | None, now: float) -> Lifetime | None:
        n = len(self.starts)
        if seen is not None:
            k = seen.look
            at_least = max(0.0, now - self.ends[k])
            at_most = None if k == 0 else max(at_least, now - self.starts[k - 1])
            return Lifetime(at_least, at_most)
        # No look saw it: born after look n-2 began (a socket alive then would be tracked,
        # and one freed before it was announced before now, the workqueue being far faster
        # than a look interval).
        if n >= 2:
            return Lifetime(0.0, max(0.0, now - self.starts[n - 2]))
        return None


# --- the log


#: How often a look (a dump with cookies; owners of new sockets) runs by default, seconds.
LOOK_INTERVAL: Final = 1.0
#: How often a look running on the worker thread is checked for, seconds.
_REAP_EVERY: Final = 0.02
#: How often ``all_netns`` looks for namespaces that appeared or vanished, seconds.
CENSUS_INTERVAL: Final = 2.0


class ClosedConnections:
    """A running closed-connection log: a context manager and an iterator of ClosedConnection.

    Made by ``closed_connections()``. ``poll(timeout)`` returns the closes that arrive within
    ``timeout`` seconds (an empty list when none); iterating blocks for the next one and ends
    when every followed namespace has gone (``netns=`` deleted) or ``close()`` was called.
    ``fileno()`` is readable when closes wait (for selectors and asyncio); ``async for`` works
    on an event loop. ``lost`` counts the closes the log missed: events the kernel dropped
    (its buffer was full) plus sockets a look saw that vanished unannounced. ``skipped`` names
    the namespaces ``all_netns`` could not follow (``notes`` says why, in words).
    ``owner_share``: the share of the time walks of /proc/*/fd for owners may take (on a host
    whose processes hold many descriptors one walk takes seconds, and announcements wait
    meanwhile): after a walk of T seconds, none for T * (1 / share - 1); 1 walks at every look.
    """

    def __init__(self, *, port: int | None = None, netns: NetnsArg = None,
                 all_netns: bool = False, owners: bool = True,
                 look_interval: float = LOOK_INTERVAL, rcvbuf: int = 0,
                 owner_share: float = OWNER_SHARE) -> None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 <= port <= 65535):
            raise InvalidConfigError("port", port, "0..65535 or None")
        if all_netns and netns is not None:
            raise InvalidConfigError("netns", netns, "None with all_netns=True",
                                     "give netns or all_netns, not both")
        if not (isinstance(look_interval, (int, float)) and 0 < look_interval < math.inf):
            raise InvalidConfigError("look_interval", look_interval, "seconds > 0")
        if not (isinstance(owner_share, (int, float)) and 0 < owner_share <= 1):
            raise InvalidConfigError("owner_share", owner_share, "a share of the time, 0 < s <= 1")
        if isinstance(rcvbuf, bool) or not isinstance(rcvbuf, int) or not 0 <= rcvbuf < 2**31:
            raise InvalidConfigError("rcvbuf", rcvbuf, "0 (the default) .. 2**31-1 bytes")
        self.port = port
        self.owners = owners
        self.all_netns = all_netns
        self.look_interval = float(look_interval)
        self._rcvbuf = rcvbuf
        self.owner_share = float(owner_share)
        self._followers: dict[int, _Follower] = {}
        self._pending: dict[int, concurrent.futures.Future[_Gathered]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pysockopt-closed-look")
        self._ready: deque[ClosedConnection] = deque()
        self._epoll = select.epoll()
        self._closed = False
        self._next_look = 0.0
        self._next_census = 0.0
        self._reconciled = 0
        self._overflows = 0
        self._drops = 0
        self.skipped: tuple[NetnsSkipped, ...] = ()
        self._census_notes: tuple[str, ...] = ()
        self.seen = 0
        try:
            if all_netns:
                self._census()
            else:
                where = resolve(netns)
                fd = _open_here(rcvbuf) if where is None else _open_in(where, rcvbuf)
                self._add(where, fd)
            # The first look starts now and is folded in as soon as it is done (its owner
            # walk covers every socket there is: seconds on a busy host); look() waits.
            self._look()
        except BaseException:
            self.close()
            raise

    # --- followers

    def _add(self, ns: NetNamespace | None, fd: int) -> None:
        key = current_inode() if ns is None else ns.inode
        f = _Follower(ns, fd, self.port, self.owner_share)
        self._followers[key] = f
        self._epoll.register(fd, select.EPOLLIN)

    def _drop(self, key: int) -> None:
        self._pending.pop(key, None)  # a look still running there is not folded in
        f = self._followers.pop(key)
        self._flush(f)  # what it announced before going still counts
        self._account(f)
        with _suppress_ebadf():
            self._epoll.unregister(f.fd)
        f.close()

    def _census(self) -> None:
        own = current_inode()
        found = namespaces()
        skipped: list[NetnsSkipped] = []
        present = set()
        for ns in found:
            key = ns.inode
            present.add(key)
            if key in self._followers:
                continue
            try:
                fd = _open_here(self._rcvbuf) if key == own else _open_in(ns, self._rcvbuf)
            except NetnsGoneError as err:
                skipped.append(NetnsSkipped(ns, "vanished", str(err)))
                continue
            except NetnsPermissionError as err:
                skipped.append(NetnsSkipped(ns, "permission", str(err), err.check))
                continue
            self._add(ns if key != own else None, fd)
        for key in list(self._followers):
            if key not in present and key != own:
                self._drop(key)
        self.skipped = tuple(skipped)
        self._census_notes = found.notes
        self._next_census = time.monotonic() + CENSUS_INTERVAL

    @property
    def notes(self) -> tuple[str, ...]:
        """What the log cannot see, in words (empty when it follows every namespace)."""
        return (*refusal_notes(s.check for s in self.skipped if s.reason == "permission"),
                *self._census_notes)

    @property
    def netns(self) -> tuple[NetNamespace | None, ...]:
        """The namespaces followed now (None: the caller's own)."""
        return tuple(f.ns for f in self._followers.values())

    # --- counts

    def _account(self, f: _Follower) -> None:
        f.kernel_drops()
        self._drops += f.drops
        self._overflows += f.overflows
        self._reconciled += f.reconciled

    @property
    def dropped(self) -> int:
        """Announcements the kernel dropped because a receive buffer was full (exact).

        SO_MEMINFO's drop count of each subscriber: one per event netlink could not queue.
        """
        return self._drops + sum(f.kernel_drops() for f in self._followers.values())

    @property
    def missing(self) -> int:
        """Sockets a look saw that were freed with no announcement (found by reconciling).

        Counted one look after a look first missed them, and only when no process holds
        their inode any more (a reset or destroyed socket leaves the dumps at once but is
        freed, and announced, when its owner closes it).
        """
        return self._reconciled + sum(f.reconciled for f in self._followers.values())

    @property
    def lost(self) -> int:
        """Closes the log missed, at least: the larger of ``dropped`` and ``missing``.

        The two overlap: a dropped announcement of a socket a look saw is also found missing;
        one of a socket born after the last look only dropped; one the kernel could not even
        allocate (GFP_ATOMIC) only missing. Either count alone is a floor; 0 means nothing
        was lost that either could see.
        """
        return max(self.dropped, self.missing)

    @property
    def overflows(self) -> int:
        """How many times reading found the buffer had overflowed (recv said ENOBUFS)."""
        return self._overflows + sum(f.overflows for f in self._followers.values())

    # --- reading

    def fileno(self) -> int:
        """Return a descriptor readable when closes wait (an epoll of the subscribers)."""
        if self._closed:
            raise ValueError("the closed-connection log is closed")
        return self._epoll.fileno()

    @property
    def looks(self) -> int:
        """How many looks every followed namespace has had (the fewest of any)."""
        return min((len(f.starts) for f in self._followers.values()), default=0)

    def look(self) -> None:
        """Take a look now and wait for it (a dump with cookies; owners; reconciling)."""
        if not self._closed:
            self._reap(wait=True)
            self._look()
            self._reap(wait=True)

    def _look(self) -> None:
        # The dump and the owner walk run on a worker thread while this one keeps reading:
        # a dump walks the host's whole TCP hash (50-360 ms measured) and a walk of /proc
        # can take seconds, time in which a receive buffer would fill.
        for key, f in list(self._followers.items()):
            if key in self._pending:
                continue
            self._flush(f)
            self._pending[key] = self._pool.submit(f.gather, f.snapshot(self.owners))
        self._next_look = time.monotonic() + self.look_interval

    def _reap(self, wait: bool = False) -> None:
        for key, future in list(self._pending.items()):
            if not wait and not future.done():
                continue
            del self._pending[key]
            f = self._followers.get(key)
            if f is None:
                continue
            try:
                got = future.result()
            except (NetnsGoneError, FileNotFoundError, ProcessLookupError):
                self._drop(key)  # the namespace was deleted: its stream ends here
                continue
            self._flush(f)  # announcements read before the look is folded in
            f.apply(got, self.owners)

    def _flush(self, f: _Follower) -> None:
        recs = f.drain()
        if not recs:
            return
        now_wall = time.time()
        now = time.monotonic()
        port = self.port
        seen_pop = f.seen.pop
        missing_pop = f.missing.pop
        announced = f.announced
        declared = f.declared_lost
        lifetime = f.lifetime
        ns = f.ns
        new = tuple.__new__
        cls = ClosedConnection
        append = self._ready.append
        count = 0
        # The cost of the log is this loop (one pass per close): local lookups only.
        for c in recs:
            (family, state, local_address, local_port, remote_address, remote_port, rqueue,
             wqueue, _, _, _, _, _, _, info, _, cookie) = c
            if port is not None and local_port != port and remote_port != port:
                continue
            seen = seen_pop(cookie, None)
            missing_pop(cookie, None)
            announced[cookie] = None
            if cookie in declared:  # announced after all: not lost
                del declared[cookie]
                f.reconciled -= 1
            wqueue = wqueue or 0
            verdict, evidence = verdict_of(info, wqueue=wqueue, rqueue=rqueue,
                                           remote_address=remote_address,
                                           remote_port=remote_port)
            append(new(cls, (
                family, state, local_address, local_port, remote_address, remote_port, cookie,
                rqueue, wqueue, info, ns, now_wall, lifetime(seen, now),
                None if seen is None else seen.owner, verdict, evidence,
                None if seen is None else seen.state)))
            count += 1
        self.seen += count
        excess = len(announced) - _MAX_DECLARED
        if excess > 0:
            for key in list(itertools.islice(announced, excess)):
                del announced[key]

    def _tick(self) -> None:
        now = time.monotonic()
        if self.all_netns and now >= self._next_census:
            self._census()
        self._reap()
        if now >= self._next_look:
            self._look()
        for f in list(self._followers.values()):
            self._flush(f)

    def poll(self, timeout: float | None = 0.0) -> list[ClosedConnection]:
        """Return the closes that arrive within ``timeout`` seconds (None: until one does).

        An empty list when none came (or the log is closed). Looks run on the way, every
        ``look_interval`` seconds.
        """
        if self._closed:
            return []
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            self._tick()
            if self._ready or not self._followers:
                out = list(self._ready)
                self._ready.clear()
                return out
            now = time.monotonic()
            wait = self._next_look - now
            if self._pending:
                wait = min(wait, _REAP_EVERY)
            if deadline is not None:
                if now >= deadline:
                    return []
                wait = min(wait, deadline - now)
            self._epoll.poll(max(0.0, wait))

    def __iter__(self) -> Iterator[ClosedConnection]:
        return self

    def __next__(self) -> ClosedConnection:
        while not self._ready:
            if self._closed or not self._followers:
                raise StopIteration
            self._ready.extend(self.poll(None))
        return self._ready.popleft()

    def __aiter__(self) -> AsyncIterator[ClosedConnection]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[ClosedConnection]:
        loop = asyncio.get_running_loop()
        while not self._closed and (self._ready or self._followers):
            if not self._ready:
                self._ready.extend(self.poll(0))
            if self._ready:
                yield self._ready.popleft()
                continue
            readable: asyncio.Future[None] = loop.create_future()
            fd = self.fileno()
            loop.add_reader(fd, _wake, readable)
            try:
                wait = max(0.0, self._next_look - time.monotonic())
                if self._pending:
                    wait = min(wait, _REAP_EVERY)
                await asyncio.wait([readable], timeout=wait)
            finally:
                loop.remove_reader(fd)

    def close(self) -> None:
        """Unsubscribe from every namespace (the log can be closed any number of times)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        for key in list(self._followers):
            f = self._followers.pop(key)
            self._account(f)
            f.close()
        self._epoll.close()

    def __enter__(self) -> ClosedConnections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def _wake(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_result(None)


class _suppress_ebadf:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, OSError) and value.errno in (errno.EBADF, errno.ENOENT)


def closed_connections(*, port: int | None = None, netns: NetnsArg = None,
                       all_netns: bool = False, owners: bool = True,
                       look_interval: float = LOOK_INTERVAL,
                       owner_share: float = OWNER_SHARE) -> ClosedConnections:
    """Start a closed-connection log: every TCP connection the kernel frees, as it goes.

    ``with closed_connections(port=5432) as log: for c in log: print(c.remote, c.verdict)``.
    ``port``: closes whose local or remote port is ``port``. ``netns``: another namespace (an
    ``ip netns`` name, a path, a pid, a NetNamespace; entering needs CAP_SYS_ADMIN);
    ``all_netns``: every namespace, those that appear later included, each close naming its
    namespace and container. ``owners``: look up the processes holding each socket at the
    looks (a walk of /proc per look that found new sockets). ``look_interval``: seconds
    between looks (lifetimes are as precise as this); ``owner_share``: see ClosedConnections.
    Subscribing needs no privilege in
    the caller's own namespace: the kernel announces every close of that namespace to any
    user, root's included.
    """
    return ClosedConnections(port=port, netns=netns, all_netns=all_netns, owners=owners,
                             look_interval=look_interval, owner_share=owner_share)


# --- aggregation for watch, the exporter and the rules


#: Upper bounds (seconds) of the lifetime histogram's buckets, Prometheus style (+Inf last).
LIFETIME_BUCKETS: Final = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, math.inf)


@dataclass(frozen=True, slots=True)
class CloseTotals:
    """What a CloseStats counted: every mapping bounded by its ``max_*`` (overflow: "other").

    ``by_port_verdict``: (port label, verdict) -> closes, the port label a tracked port as a
    string or "other"; ``lifetime_buckets``: cumulative counts per LIFETIME_BUCKETS bound (the
    best-known figure: the upper bound where that is all there is, else ``at_least``);
    ``lifetime_sum`` / ``lifetime_count``; ``short_lived``: (remote address, owner command) ->
    closes no look saw (born and gone between two looks: the churn behind TIME_WAIT);
    ``gave_up_by_remote``: remote address -> closes given up on (peers dying);
    ``unacked_by_port_owner``: (port label, owner command) -> closes with unacknowledged data;
    ``bytes_acked`` / ``bytes_received`` / ``retransmits`` (total_retrans) of the closes;
    ``lost``: closes missed.
    """

    closes: int
    by_port_verdict: dict[tuple[str, str], int] = field(default_factory=dict)
    lifetime_buckets: tuple[int, ...] = ()
    lifetime_sum: float = 0.0
    lifetime_count: int = 0
    short_lived: dict[tuple[str, str], int] = field(default_factory=dict)
    gave_up_by_remote: dict[str, int] = field(default_factory=dict)
    unacked_by_port_owner: dict[tuple[str, str], int] = field(default_factory=dict)
    bytes_acked: int = 0
    bytes_received: int = 0
    retransmits: int = 0
    lost: int = 0

    def since(self, earlier: CloseTotals) -> CloseTotals:
        """Return what was counted between ``earlier`` and these totals (for one interval).

        Watch's closes per second and the rules' "within the interval" figures: every count
        and mapping minus ``earlier``'s, keys that did not grow left out.
        """
        def minus(now: dict[_K, int], then: dict[_K, int]) -> dict[_K, int]:
            return {k: v - then.get(k, 0) for k, v in now.items() if v > then.get(k, 0)}

        return CloseTotals(
            self.closes - earlier.closes,
            minus(self.by_port_verdict, earlier.by_port_verdict),
            tuple(a - b for a, b in itertools.zip_longest(
                self.lifetime_buckets, earlier.lifetime_buckets, fillvalue=0)),
            self.lifetime_sum - earlier.lifetime_sum,
            self.lifetime_count - earlier.lifetime_count,
            minus(self.short_lived, earlier.short_lived),
            minus(self.gave_up_by_remote, earlier.gave_up_by_remote),
            minus(self.unacked_by_port_owner, earlier.unacked_by_port_owner),
            self.bytes_acked - earlier.bytes_acked,
            self.bytes_received - earlier.bytes_received,
            self.retransmits - earlier.retransmits,
            self.lost - earlier.lost)


_K = TypeVar("_K")


class CloseStats:
    """Fold ClosedConnections into bounded counters (``add``), read them with ``totals()``.

    ``ports``: the ports that get their own label (listeners and the exporter's ``--ports``);
    any other close counts under "other". ``listening``: the local ports of listeners: a
    close on one is an accepted (inbound) end, not counted as a short-lived connection to its
    client (a loopback connection would count twice). ``max_keys`` bounds every
    per-destination or per-owner mapping: past it, new keys count under "other";
    ``max_ports`` bounds the port labels ever used (a host with thousands of listeners still
    has at most ``max_ports`` + 1 of them): the cardinality is asserted in tests. An owner
    no look named counts as "unknown". Counters only grow (Prometheus ``_total``), so a
    scrape reads ``totals()`` each time.
    """

    def __init__(self, ports: Iterable[int] = (), *, max_keys: int = 64,
                 max_ports: int = 64, listening: Iterable[int] = ()) -> None:
        self.ports = frozenset(int(p) for p in ports)
        self.listening = frozenset(int(p) for p in listening)
        for name, value in (("max_keys", max_keys), ("max_ports", max_ports)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(name, value, "an int >= 1")
        self.max_keys = max_keys
        self.max_ports = max_ports
        self._labels: set[str] = set()
        self._closes = 0
        self._by_port_verdict: dict[tuple[str, str], int] = {}
        self._buckets = [0] * len(LIFETIME_BUCKETS)
        self._sum = 0.0
        self._count = 0
        self._short: dict[tuple[str, str], int] = {}
        self._gave_up: dict[str, int] = {}
        self._unacked: dict[tuple[str, str], int] = {}
        self._acked = 0
        self._received = 0
        self._retrans = 0
        self._lost = 0

    def set_ports(self, ports: Iterable[int], listening: Iterable[int] | None = None) -> None:
        """Change the ports that get their own label (listeners come and go between scrapes).

        Closes counted before keep their labels; the number of port labels stays bounded by
        how many ports are ever tracked. ``listening``: the listening ports, when given.
        """
        self.ports = frozenset(int(p) for p in ports)
        if listening is not None:
            self.listening = frozenset(int(p) for p in listening)

    def port_label(self, c: ClosedConnection) -> str:
        """Return the port a close counts under: local or remote when tracked, else other.

        Past ``max_ports`` port labels, a port not labelled yet counts as "other" too.
        """
        for port in (c.local_port, c.remote_port):
            if port in self.ports:
                text = str(port)
                if text in self._labels:
                    return text
                if len(self._labels) < self.max_ports:
                    self._labels.add(text)
                    return text
                return "other"
        return "other"

    def _bump(self, table: dict[object, int], key: object, other: object) -> None:
        if key not in table and len(table) >= self.max_keys:
            key = other
        table[key] = table.get(key, 0) + 1

    def add(self, c: ClosedConnection) -> None:
        """Count one close."""
        self._closes += 1
        port = self.port_label(c)
        key = (port, c.verdict.value)
        self._by_port_verdict[key] = self._by_port_verdict.get(key, 0) + 1  # bounded by ports
        owner = min(p.command for p in c.owner) if c.owner else "unknown"
        if c.lifetime is not None:
            value = c.lifetime.seconds
            self._sum += value
            self._count += 1
            for i, bound in enumerate(LIFETIME_BUCKETS):
                if value <= bound:
                    self._buckets[i] += 1
            if c.lifetime.upper_bound and c.local_port not in self.listening:
                # Its outbound end only: an accepted connection is not one "to" its client.
                self._bump(self._short, (c.remote_address, owner),  # type: ignore[arg-type]
                           ("other", "other"))
        if c.verdict is Verdict.GAVE_UP:
            self._bump(self._gave_up, c.remote_address, "other")  # type: ignore[arg-type]
        if dict(c.evidence).get("unacked_bytes"):
            self._bump(self._unacked, (port, owner), ("other", "other"))  # type: ignore[arg-type]
        if c.info is not None:
            self._acked += c.info.bytes_acked or 0
            self._received += c.info.bytes_received or 0
            self._retrans += c.info.total_retrans or 0

    def add_lost(self, n: int) -> None:
        """Count ``n`` more closes missed (a log's ``lost`` grew by ``n``)."""
        if n < 0:
            raise InvalidConfigError("n", n, "an int >= 0")
        self._lost += n

    def totals(self) -> CloseTotals:
        """Return a copy of every counter now."""
        return CloseTotals(
            self._closes, dict(self._by_port_verdict), tuple(self._buckets), self._sum,
            self._count, dict(self._short), dict(self._gave_up), dict(self._unacked),
            self._acked, self._received, self._retrans, self._lost)


# --- driven by looks: diagnose --interval, watch and the exporter


#: The states (a bit per state) of the sockets a look's dump lists that the log follows.
_TRACKED_MASK: Final = sum(1 << s for s in _TRACKED)
#: A look's cookie and inode packed into one int per followed socket: index << 32 | inode.
_INODE_BITS: Final = 32
_INODE_MASK: Final = (1 << _INODE_BITS) - 1


#: Looks a followed socket with an inode may be missing from, its holder not known, before
#: it counts as lost (a socket reset while held is announced only when its holder closes it;
#: one announced later still is taken back).
_HELD_LOOKS: Final = 8


class _Held(set[int]):
    """The inodes a process still holds; ``unheld``: those its known holders no longer do."""

    unheld: frozenset[int] = frozenset()


def _held(holders: Iterable[tuple[int, tuple[Process, ...]]]) -> _Held:
    """Return which inodes of ``holders`` (inode, its holders as a lookup named them) are held.

    No walk of /proc: only the descriptors of the processes the looks' lookups named are
    read, each once. An inode with no named holder is in neither set (its verdict waits).
    """
    out = _Held()
    by_pid: dict[int, set[int]] = {}
    for inode, procs in holders:
        for p in procs:
            by_pid.setdefault(p.pid, set()).add(inode)
    if not by_pid:
        return out
    asked = set().union(*by_pid.values())
    for pid, want in by_pid.items():
        names = {f"socket:[{i}]": i for i in want}
        with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    found = names.get(os.readlink(entry.path))
                    if found is not None:
                        out.add(found)
    out.unheld = frozenset(asked - out)
    return out


class _Fed:
    """One namespace of a CloseFeed: its subscriber, and the cookies its looks listed."""

    def __init__(self, ns: NetNamespace | None, fd: int, port: int | None) -> None:
        # The subscriber and its bookkeeping (drain, drops, announced, declared lost).
        self.sub = _Follower(ns, fd, port)
        self.first: dict[int, int] = {}     # cookie -> first look's index << 32 | inode
        self.missing: dict[int, int] = {}   # cookie -> looks it has been missing from
        # The looks a followed (or declared) cookie refers to: index -> (the previous look's
        # start, its dump's end), with how many cookies refer to each; dropped at 0.
        self.looks: dict[int, tuple[float | None, float]] = {}
        self.refs: dict[int, int] = {}
        self.folded = 0                     # looks folded in
        self.last_start: float | None = None  # the start of the last look folded in
        self.start = 0.0                    # the look in progress: when it entered
        self.end = 0.0                      # and when its dump ended
        self.listed: dict[int, int] | None = None  # its sockets: cookie -> inode
        self.since: list[ClosedConnection] = []     # closes read since the last observe
        self.lost = 0                       # lost at the last observe
        self.failed = False                 # a read failed since the last observe
        # Cookies counted lost, with what ``first`` had (an announcement takes them back).
        self.declared: dict[int, int] = {}
        # Missing cookies' holders, as named when they went missing (the held check).
        self.holders: dict[int, tuple[Process, ...]] = {}

    def read(self, owners: OwnerCache | None) -> None:
        """Read the closes that wait (non-blocking) into ``since``."""
        f = self.sub
        recs = f.drain()
        if not recs:
            return
        now_wall, now = time.time(), time.monotonic()
        last = self.last_start
        # No look listed it: it was not there at the last look (whose dump ended before the
        # closes read at its fold were read), so it was born after that look began.
        unseen = None if last is None else Lifetime(0.0, max(0.0, now - last))
        port = f.port
        first_pop, missing_pop = self.first.pop, self.missing.pop
        announced, declared_pop = f.announced, self.declared.pop
        holders_pop = self.holders.pop
        looks, refs = self.looks, self.refs
        known = None if owners is None else owners.known
        new, cls, ns = tuple.__new__, ClosedConnection, f.ns
        append = self.since.append
        for c in recs:
            (family, state, local_address, local_port, remote_address, remote_port, rqueue,
             wqueue, _, _, _, _, _, _, info, _, cookie) = c
            if port is not None and local_port != port and remote_port != port:
                continue
            packed = first_pop(cookie, None)
            if missing_pop(cookie, None) is not None:
                holders_pop(cookie, None)
            announced[cookie] = None
            if packed is None:
                packed = declared_pop(cookie, None)
                if packed is not None:  # announced after all: not lost, and a look saw it
                    f.reconciled -= 1
            owner: tuple[Process, ...] | None = None
            if packed is None:
                lifetime = unseen
            else:
                k, inode = packed >> _INODE_BITS, packed & _INODE_MASK
                before, end = looks[k]
                if refs[k] > 1:
                    refs[k] -= 1
                else:
                    del refs[k], looks[k]
                at_least = max(0.0, now - end)
                lifetime = Lifetime(at_least, None if before is None
                                    else max(at_least, now - before))
                if known is not None and inode:
                    owner = known(inode)
            wqueue = wqueue or 0
            verdict, evidence = verdict_of(info, wqueue=wqueue, rqueue=rqueue,
                                           remote_address=remote_address,
                                           remote_port=remote_port)
            append(new(cls, (
                family, state, local_address, local_port, remote_address, remote_port, cookie,
                rqueue, wqueue, info, ns, now_wall, lifetime, owner, verdict, evidence, None)))
        excess = len(announced) - _MAX_DECLARED
        if excess > 0:
            for key in list(itertools.islice(announced, excess)):
                del announced[key]

    def fold(self, listeners: Iterable[Connection], owners: OwnerCache | None = None) -> None:
        """Fold the look in progress (its listing and ``listeners``) into what was seen.

        A cookie a look listed is followed; one that two looks in a row no longer list and
        was never announced is a close the log missed (counted in ``reconciled``) unless a
        process may still hold it (``_held``). One announced later is taken back.
        """
        listed = self.listed or {}
        for c in listeners:
            if c.cookie:
                listed[c.cookie] = c.inode
        self.listed = None
        index = self.folded
        self.folded += 1
        before, self.last_start = self.last_start, self.start
        first, missing = self.first, self.missing
        announced = self.sub.announced
        base = index << _INODE_BITS
        new = 0
        for cookie in listed.keys() - first.keys():
            if cookie not in announced:
                first[cookie] = base | (listed[cookie] & _INODE_MASK)
                new += 1
        if new:
            self.looks[index] = (before, self.end)
            self.refs[index] = new
        gone = first.keys() - listed.keys()
        holders = self.holders
        for cookie in [k for k in missing if k not in gone]:
            del missing[cookie]
            holders.pop(cookie, None)
        declared = self.declared
        known = None if owners is None else owners.known
        due = []
        for cookie in gone:
            times = missing.get(cookie, 0) + 1
            missing[cookie] = times
            if times == 1 and known is not None:
                # Its holders as the looks' lookups named them (kept: the cache forgets an
                # inode no look asks about).
                procs = known(first[cookie] & _INODE_MASK)
                if procs:
                    holders[cookie] = procs
            if times >= 2:  # its announcement may still be on its way (a workqueue sends it)
                due.append(cookie)
        # Gone from the dumps is not yet freed: a socket reset or timed out while a process
        # holds its descriptor is unhashed at once and announced only when that closes.
        # Its named holders' descriptors are read at the 2nd, 4th, 8th... look it is missing
        # from (a process may hold a million); one nobody named waits _HELD_LOOKS looks.
        held = _held((first[k] & _INODE_MASK, holders[k]) for k in due
                     if k in holders and not missing[k] & (missing[k] - 1)) if due else _Held()
        lost = 0
        for cookie in due:
            inode = first[cookie] & _INODE_MASK
            if cookie in holders:
                if inode not in held.unheld:
                    continue  # still held, or not read this time
            elif inode and missing[cookie] < _HELD_LOOKS:
                continue
            declared[cookie] = first.pop(cookie)
            del missing[cookie]
            holders.pop(cookie, None)
            lost += 1
        while len(declared) > _MAX_DECLARED:
            self._unref(declared.pop(next(iter(declared))) >> _INODE_BITS)
        self.sub.reconciled += lost

    def _unref(self, k: int) -> None:
        if self.refs[k] > 1:
            self.refs[k] -= 1
        else:
            del self.refs[k], self.looks[k]

    def lost_now(self) -> int:
        """Return the closes missed here: the larger of the kernel's drops and the reconciled."""
        return max(self.sub.kernel_drops(), self.sub.reconciled)


class CloseFeed:
    """A closed-connection log driven by the looks diagnose, watch and the exporter take.

    It takes no look of its own: ``look(..., feed=this)`` calls ``entered`` once it is in
    the namespace (the first time, the subscriber is made there: its only entry of its own),
    ``listed`` with each dump (the cookies and inodes of the sockets followed, read in C) and
    ``observe`` at its end, which reads the closes that came, folds the look in and returns
    the closes since the namespace's previous look as CloseTotals (None at its first look:
    the rules on closes need an interval, as the other time rules). ``wait(seconds)`` reads
    closes while the caller waits between looks; ``start_reader()`` reads them on a thread
    of its own (the exporter, whose scrapes may be a minute apart).

    Owners are never walked for: a close is named by what ``owners`` (the looks' OwnerCache)
    already found for its inode while it lived, else its owner is None ("unknown").
    ``port``: only closes on that local or remote port (the looks' own ``port``; ``lost``
    still counts the kernel's drops of every close in the namespace: its drop count has no
    port, so with ``port`` it is an upper bound). ``stats``
    counts every close read (the exporter's metrics); ``ports``: the ports counted under
    their own label besides the listeners the looks saw (this one's or an earlier one's: a
    restarted service's closes keep its port; the ``max_ports`` latest). ``errors``: why a
    namespace has no subscriber or its last read failed (tried again at its next look).
    ``keep``: keep every close in ``closes`` too (for a caller that wants the records; watch
    and the exporter count them only).
    """

    def __init__(self, *, port: int | None = None, ports: Iterable[int] = (),
                 owners: OwnerCache | None = None, rcvbuf: int = 0,
                 max_ports: int = 64, keep: bool = False) -> None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 <= port <= 65535):
            raise InvalidConfigError("port", port, "0..65535 or None")
        self.port = port
        self.ports = frozenset(int(p) for p in ports)
        self.owners = owners
        self.stats = CloseStats(self.ports, max_ports=max_ports)
        self.errors: dict[int, str] = {}
        self.closes: list[ClosedConnection] = []
        self._cookies: ffi.CData = ffi.new("uint64_t[]", 0)
        self._keep = keep
        self._rcvbuf = rcvbuf
        self._fed: dict[int, _Fed] = {}
        self._seen_ports: dict[int, None] = {}  # listening ports the looks saw, oldest first
        self._gone_lost = 0
        self._epoll = select.epoll()
        self._lock = threading.RLock()
        self._reader: threading.Thread | None = None
        self._closed = False

    # --- the hooks a look calls

    def entered(self, target: Entered | None, inode: int, ns: NetNamespace | None) -> None:
        """Note a look entering namespace ``inode`` (``target``: its descriptor, None: ours)."""
        with self._lock:
            if self._closed:
                return
            fed = self._fed.get(inode)
            if fed is None:
                try:
                    fd = _open_here(self._rcvbuf) if target is None else _subscribe(
                        target, self._rcvbuf)
                except OSError as err:
                    self.errors[inode] = f"no closed-connection log: {err}"
                    return
                self.errors.pop(inode, None)
                fed = self._fed[inode] = _Fed(ns, fd, self.port)
                self._epoll.register(fd, select.EPOLLIN)
            fed.start = time.monotonic()
            fed.listed = None
            # What fold needs of the announcements: those read since this look began (one
            # read earlier was freed before this look's dump, which cannot list it).
            fed.sub.announced.clear()

    def listed(self, inode: int, dump: NativeDump) -> None:
        """List the sockets a look dumped in namespace ``inode`` (before a tally compacts them)."""
        fed = self._fed.get(inode)
        if fed is None:
            return
        sink = dump.sink
        cap = int(sink.nconns)  # type: ignore[attr-defined]
        with self._lock:
            if 2 * cap > len(self._cookies):  # grown once, kept: not cleared for every look
                self._cookies = _new_uninitialised("uint64_t[]", 2 * cap + 1024)
            out = self._cookies
            n = lib.pso_ev_cookies(sink, _TRACKED_MASK, out, cap)
            if n < 0:
                raise os_error(int(n), "listing the cookies of a dump")
            it = iter(ffi.unpack(out, 2 * n) if n else [])
            if fed.listed is None:
                fed.listed = dict(zip(it, it, strict=True))
            else:
                fed.listed.update(zip(it, it, strict=True))
            fed.end = time.monotonic()

    def observe(self, inode: int, complete: bool,
                listeners: Iterable[Connection]) -> CloseTotals | None:
        """End a look of namespace ``inode``: read its closes, fold the look in.

        The look is folded in when it listed every socket followed (``complete``). Returns
        the closes since the namespace's previous look (None at its first, or without a
        subscriber).
        """
        with self._lock:
            fed = self._fed.get(inode)
            if fed is None:
                return None
            listeners = list(listeners)
            first = not fed.folded
            try:
                fed.read(self.owners)
            except OSError as err:
                self.errors[inode] = f"reading the closed-connection log: {err}"
                fed.failed = True
            # A read error is said by the look after it (this one), then no more unless a
            # read fails again (not on every scrape after one transient failure).
            if not fed.failed:
                self.errors.pop(inode, None)
            fed.failed = False
            if complete:
                fed.fold(listeners, self.owners)
            else:
                fed.listed = None
            got, fed.since = fed.since, []
            if self._keep:
                self.closes += got
            seen = self._listened(listeners)
            ports = self.ports | seen
            # Which closes are accepted ends: on a listener a look saw, or one no look saw
            # whose own close (no peer) came with them. Only the former label a port.
            listening = seen | {c.local_port for c in got if c.remote_port == 0
                                and c.remote_address in ("0.0.0.0", "::")}
            self.stats.set_ports(ports, listening)
            interval = CloseStats(ports, max_keys=self.stats.max_keys,
                                  max_ports=self.stats.max_ports, listening=listening)
            for c in got:
                self.stats.add(c)
                interval.add(c)
            lost = fed.lost_now()
            if lost > fed.lost:
                self.stats.add_lost(lost - fed.lost)
                interval.add_lost(lost - fed.lost)
                fed.lost = lost
            return None if first else interval.totals()

    def _listened(self, listeners: list[Connection]) -> frozenset[int]:
        """Note the ports ``listeners`` listen on; return every listening port a look saw.

        A service that restarts between two looks (its listener and connections closed)
        still has its closes counted under its port. Bounded: the ``max_ports`` most
        recently seen are kept.
        """
        seen = self._seen_ports
        for port in [c.local_port for c in listeners]:
            seen.pop(port, None)
            seen[port] = None
        while len(seen) > self.stats.max_ports:
            del seen[next(iter(seen))]
        return frozenset(seen)

    # --- between looks

    def wait(self, seconds: float) -> None:
        """Read closes as they come for ``seconds`` (what a caller between looks does)."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                ready = self._epoll.poll(left)
            except (OSError, ValueError):
                return  # closed meanwhile
            if ready:
                self._read_ready({fd for fd, _ in ready})

    def _read_ready(self, fds: set[int]) -> None:
        with self._lock:
            for key, fed in list(self._fed.items()):
                if fed.sub.fd in fds:
                    try:
                        fed.read(self.owners)
                    except OSError as err:
                        self.errors[key] = f"reading the closed-connection log: {err}"
                        fed.failed = True
                    except Exception as err:  # said, and the thread reads on
                        self.errors[key] = ("reading the closed-connection log: "
                                            f"{type(err).__name__}: {err}")
                        fed.failed = True

    def start_reader(self) -> None:
        """Read closes on a daemon thread until ``close()``.

        A buffer not read between two scrapes a minute apart would overflow: about 8k
        closes fit in the default one.
        """
        with self._lock:
            if self._reader is None and not self._closed:
                # A weak reference: a feed nobody else holds is closed by its collection.
                self._reader = threading.Thread(target=_read_forever,
                                                args=(weakref.ref(self),), daemon=True,
                                                name="pysockopt-closes")
                self._reader.start()

    def keep(self, inodes: Iterable[int]) -> None:
        """Stop following every namespace but ``inodes`` (those a look of all found)."""
        wanted = set(inodes)
        with self._lock:
            for key in [k for k in self._fed if k not in wanted]:
                self._drop(key)

    def _drop(self, key: int) -> None:
        fed = self._fed.pop(key)
        self.errors.pop(key, None)
        with contextlib.suppress(OSError):
            fed.read(self.owners)  # what it announced before going still counts
        for c in fed.since:
            self.stats.add(c)
        lost = fed.lost_now()
        if lost > fed.lost:
            self.stats.add_lost(lost - fed.lost)
        with _suppress_ebadf():
            self._epoll.unregister(fed.sub.fd)
        fed.sub.close()

    @property
    def netns(self) -> tuple[int, ...]:
        """The inodes of the namespaces followed."""
        return tuple(self._fed)

    @property
    def lost(self) -> int:
        """Closes missed, as counted into ``stats`` (see ClosedConnections.lost)."""
        return self.stats.totals().lost

    def close(self) -> None:
        """Unsubscribe from every namespace (any number of times)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for key in list(self._fed):
                self._drop(key)
            self._epoll.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)

    def __enter__(self) -> CloseFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def _read_forever(ref: weakref.ref[CloseFeed]) -> None:
    while True:
        feed = ref()
        if feed is None or feed._closed:
            return
        feed.wait(0.5)
        del feed


#: Allocates C arrays without clearing them (pso_ev_cookies writes what it returns).
_new_uninitialised: Final = ffi.new_allocator(should_clear_after_alloc=False)


def _subscribe(target: Entered, rcvbuf: int) -> int:
    """Make a subscriber inside ``target``'s namespace (one entry: the runner's)."""
    step = ffi.new("int *")
    fd = lib.pso_netns_socket(target.fd, socket.AF_NETLINK, socket.SOCK_DGRAM,
                              _NETLINK_SOCK_DIAG, step)
    if fd < 0:
        raise entry_error(fd, step[0], target)
    out = ffi.new("struct pso_ev_setup *")
    rc = lib.pso_ev_setup(fd, rcvbuf, out)
    if rc:
        os.close(fd)
        raise os_error(rc, _STEP.get(out.step, "subscribing to TCP closes"))
    return int(fd)
