"""Heartbeats for many connections: a sans-IO monitor, a thread runner, a client-side sender.

``HeartbeatMonitor`` knows nothing of sockets, threads or event loops: it is told when a
connection arrives (``add``), shows life (``beat``) or goes away (``remove``), and answers which
ones have been silent for ``timeout`` (``expired``). Runners sit on top: ``HeartbeatThread``
here, ``pysockopt.aio.AsyncHeartbeats`` for asyncio.

The three dead-peer cases (docs/heartbeat.md):

- a live peer whose heartbeat is late: the runners close with shutdown(SHUT_WR) first and
  keep reading for a grace period, so nothing the peer still sends is lost;
- a dead peer: found after ``timeout`` (at most one ``tick`` later);
- a peer that died and reconnected before anyone noticed: ``add(key, identity=...)`` drops
  the older connection of the same identity at once, so stale ESTABLISHED and CLOSE_WAIT
  connections do not pile up until the next sweep.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar

from ._sock import fileno_of
from .errors import InvalidConfigError
from .keepalive import KeepaliveConfig, apply_keepalive
from .tcpinfo import TCP_INFO_FIELDS, TcpState, poll_tcp_info

__all__ = [
    "CloseReason",
    "HeartbeatMonitor",
    "HeartbeatSender",
    "HeartbeatStats",
    "HeartbeatSenderThread",
    "HeartbeatThread",
    "KernelLiveness",
    "LivenessPlan",
    "Sweep",
    "close_now",
]

K = TypeVar("K", bound=Hashable)

#: Default ticks per timeout: the detection window is [timeout, timeout * 257/256]. Finer
#: ticks add no work (each live key is re-armed about once per timeout whatever the tick) but
#: spread it: the keys that beat within one tick share a slot, so with 100k keys beating every
#: timeout / 3 a due slot holds about 1.2k of them (measured 0.3-0.5 ms to re-arm; 64 ticks
#: made it 4.7k and 1-2 ms).
DEFAULT_TICKS: Final = 256
#: Upper bound on timeout / tick, so finding the next non-empty tick stays a short scan.
MAX_TICKS: Final = 4096

_MISSING: Final[Any] = object()


class CloseReason(str, Enum):
    """Why a runner closed (or handed to its callback) a connection."""

    #: Silent for the timeout: closed with shutdown(SHUT_WR), then closed after the grace period.
    EXPIRED = "expired"
    #: The same identity connected again: the older connection is closed at once.
    REPLACED = "replaced"
    #: The kernel-assisted sweep found it in CLOSE_WAIT: the peer closed, the application not.
    PEER_CLOSED = "peer-closed"
    #: The kernel gave up on it (keepalive or TCP_USER_TIMEOUT expired, or a reset): state CLOSE.
    DEAD = "dead"
    #: Its descriptor no longer works (closed elsewhere): TCP_INFO failed with an OSError.
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class HeartbeatStats:
    """Counters of a HeartbeatMonitor since it was made."""

    #: Keys tracked now.
    tracked: int
    #: Beats for keys the monitor does not track (late beats of removed connections, bugs).
    unknown_beats: int
    #: Beats ignored because they came sooner than ``min_interval`` after the last one.
    throttled_beats: int
    #: Keys returned by expired().
    expired: int
    #: Keys dropped by add() because the same identity connected again.
    replaced: int


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidConfigError(name, value, "a finite number of seconds > 0")
    return float(value)


class HeartbeatMonitor(Generic[K]):
    """Track when each connection last showed life; say which fell silent for ``timeout``.

    Sans-IO: no sockets, no threads, no timers inside; ``clock`` (seconds, never going back)
    is the only input besides the calls. Keys are any hashable values (sockets, stream
    writers, connection ids).

    ``beat(key)`` is one timestamp store. ``expired()`` uses a coarse timing wheel of
    ``tick``-long slots with lazy re-arm: each key sits in the slot of the deadline it had when
    it was last looked at; when that slot comes due, a key that beat since is moved to the slot
    of its new deadline, the others are expired. So one call costs O(expired + ticks passed +
    keys whose slot came due), never O(tracked), and each live key is looked at about once
    per timeout.

    Detection window: a key is returned by the first expired() call made at least ``timeout``
    after its last beat whose clock has also crossed the next tick boundary; it is never
    returned before ``timeout`` and always by ``timeout + tick`` (for a caller that asks at
    least once per tick, as the runners do by sleeping until next_deadline()).

    ``tick`` defaults to ``timeout / 256``. ``min_interval`` > 0 throttles beats: a beat sooner
    than that after the key's last recorded beat is counted and ignored, so a peer cannot make
    the monitor store timestamps faster than that; its silence is then measured from a beat
    at most ``min_interval`` older than its latest.

    Not thread-safe: HeartbeatThread wraps it in a lock.
    """

    __slots__ = (
        "_by_identity",
        "_clock",
        "_cursor",
        "_dead",
        "_expired",
        "_identity_of",
        "_inv_tick",
        "_last",
        "_min_interval",
        "_origin",
        "_replaced",
        "_ring",
        "_size",
        "_throttled",
        "_tick",
        "_timeout",
        "_unknown",
        "_visited",
    )

    def __init__(
        self,
        timeout: float,
        *,
        tick: float | None = None,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = _positive("timeout", timeout)
        self._tick = self._timeout / DEFAULT_TICKS if tick is None else _positive("tick", tick)
        if self._tick > self._timeout or self._timeout / self._tick > MAX_TICKS:
            raise InvalidConfigError(
                "tick", tick, f"timeout / {MAX_TICKS} .. timeout ({self._timeout:g} s)"
            )
        self._inv_tick = 1.0 / self._tick
        if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)):
            raise TypeError(f"min_interval must be a number, not {type(min_interval).__name__}")
        if not 0 <= min_interval < self._timeout:
            raise InvalidConfigError("min_interval", min_interval, "0 (off) .. below timeout")
        self._min_interval = float(min_interval)
        self._clock = clock
        self._origin = float(clock())
        # A slot for every tick a deadline can be ahead of the cursor, and one to spare.
        self._size = math.ceil(self._timeout / self._tick) + 2
        self._ring: list[list[K]] = [[] for _ in range(self._size)]
        self._cursor = 0  # ticks before this one have been processed
        self._last: dict[K, float] = {}
        # Removed keys whose wheel entry is still in a slot: re-adding one reuses that entry,
        # so a key never has two entries however often it comes and goes.
        self._dead: set[K] = set()
        self._identity_of: dict[K, Hashable] = {}
        self._by_identity: dict[Hashable, K] = {}
        self._unknown = 0
        self._throttled = 0
        self._expired = 0
        self._replaced = 0
        self._visited = 0  # wheel entries looked at by the last expired() call (for tests)

    # --- configuration

    @property
    def timeout(self) -> float:
        """Seconds of silence after which a key expires."""
        return self._timeout

    @property
    def tick(self) -> float:
        """Width of one wheel slot in seconds: how late past ``timeout`` a key may expire."""
        return self._tick

    @property
    def detection_window(self) -> tuple[float, float]:
        """``(timeout, timeout + tick)``: a silent key expires within this many seconds."""
        return (self._timeout, self._timeout + self._tick)

    @property
    def min_interval(self) -> float:
        """Beats sooner than this after the last recorded one are ignored (0: off)."""
        return self._min_interval

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the monitor reads (seconds)."""
        return self._clock

    # --- the wheel

    def _tick_of(self, t: float) -> int:
        # Only called with t >= origin, so int() is floor.
        return int((t - self._origin) * self._inv_tick)

    def _arm(self, key: K, last: float) -> None:
        # The slot of the tick that ``last + timeout + tick`` falls in: when it comes due, so
        # is the key. Computed as a clock reading of that time would be (not as the deadline's
        # tick + 1, which float rounding can make one tick later), so a caller asking at
        # exactly timeout + tick after the last beat finds the key due.
        self._ring[self._tick_of(last + self._timeout + self._tick) % self._size].append(key)

    # --- connections

    def add(self, key: K, *, identity: Hashable = None) -> K | None:
        """Start tracking ``key`` as alive now; return the key this one replaces, if any.

        With an ``identity`` (a client id, a user, a device), an older key with the same
        identity is removed at once and returned, so the caller can close it: a client that
        died and reconnected leaves no stale connection behind. Adding a key that is already
        tracked counts as a beat and binds it to ``identity`` (None unbinds it).
        """
        hash(key)  # an unhashable key or identity fails here, before anything changed
        hash(identity)
        now = self._clock()
        dropped: K | None = None
        if identity is not None:
            old = self._by_identity.get(identity, _MISSING)
            if old is not _MISSING and old != key:
                self._drop(old)
                self._replaced += 1
                dropped = old
        last = self._last
        if key in last:
            previous = self._identity_of.pop(key, _MISSING)
            if previous is not _MISSING:
                del self._by_identity[previous]
            last[key] = now
        elif key in self._dead:
            # Its old entry is still in the wheel, at an earlier slot: lazy re-arm moves it.
            self._dead.discard(key)
            last[key] = now
        else:
            last[key] = now
            self._arm(key, now)
        if identity is not None:
            self._by_identity[identity] = key
            self._identity_of[key] = identity
        return dropped

    def beat(self, key: K) -> bool:
        """Record that ``key`` showed life now; True if recorded.

        False for a key that is not tracked (counted in ``stats().unknown_beats``) and for a
        beat throttled by ``min_interval`` (counted in ``throttled_beats``).
        """
        last = self._last
        if key in last:
            now = self._clock()
            if self._min_interval and now - last[key] < self._min_interval:
                self._throttled += 1
                return False
            last[key] = now
            return True
        self._unknown += 1
        return False

    def beat_at(self, key: K, when: float) -> bool:
        """Record life seen at clock time ``when`` (e.g. the kernel's last ACK); True if newer.

        Only moves the key's last beat forward (a time in the future counts as now); never
        throttled. Unknown keys are counted like beat()'s.
        """
        last = self._last
        previous = last.get(key)
        if previous is None:
            self._unknown += 1
            return False
        when = min(when, self._clock())
        if when <= previous:
            return False
        last[key] = when
        return True

    def remove(self, key: K) -> bool:
        """Stop tracking ``key`` (the connection closed); False if it was not tracked."""
        if key not in self._last:
            return False
        self._drop(key)
        return True

    def _drop(self, key: K) -> None:
        del self._last[key]
        self._dead.add(key)
        identity = self._identity_of.pop(key, _MISSING)
        if identity is not _MISSING:
            del self._by_identity[identity]

    def expired(self) -> list[K]:
        """Return the keys silent for at least ``timeout`` and stop tracking them.

        Costs O(expired + ticks passed + keys whose wheel slot came due): a call within the
        same tick as the previous one returns at once.
        """
        now = self._clock()
        current = self._tick_of(now)
        cursor = self._cursor
        self._visited = 0
        if current < cursor:
            return []
        out: list[K] = []
        size = self._size
        ring = self._ring
        # More than a full turn behind: every slot is due once (entries are checked against
        # their own deadline, so a slot seen "early" only re-arms).
        for tick in range(max(cursor, current - size + 1), current + 1):
            index = tick % size
            entries = ring[index]
            if entries:
                ring[index] = []
                out += self._visit(entries, now, current)
        self._cursor = current + 1
        return out

    def _visit(self, entries: list[K], now: float, current: int) -> list[K]:
        # The hot loop of lazy re-arm (about one visit per live key per timeout): local names
        # only, one multiply and one int() per key.
        last = self._last
        get = last.get
        dead = self._dead
        timeout = self._timeout
        inv = self._inv_tick
        tick = self._tick
        origin = self._origin
        size = self._size
        ring = self._ring
        out: list[K] = []
        for key in entries:
            t = get(key)
            if t is None:
                dead.discard(key)  # removed since it was armed: the entry dies here
                continue
            # Exactly as _arm computes it, so a key that did not beat gets its own slot back
            # (the one being processed), never one later.
            due = int((t + timeout + tick - origin) * inv)
            if due > current:  # it beat since: move it to its new deadline's slot
                ring[due % size].append(key)
            elif t + timeout <= now:
                out.append(key)
            else:  # rounding put a deadline that is still ahead into a tick already here
                ring[(current + 1) % size].append(key)
        self._visited += len(entries)
        if out:
            self._expired += len(out)
            identity_of = self._identity_of
            for key in out:
                del last[key]
                if identity_of:
                    identity = identity_of.pop(key, _MISSING)
                    if identity is not _MISSING:
                        del self._by_identity[identity]
        return out

    def next_deadline(self) -> float | None:
        """Clock time of the next tick with anything in its slot; None when nothing is tracked.

        A runner sleeps until then and calls expired(): nothing can expire before it. When
        expired() has not been called for a while this is in the past. After add() it only
        moves earlier if nothing was tracked before (a new key's deadline is the latest
        possible), so a runner need only reschedule then.
        """
        if not self._last and not self._dead:
            return None
        ring = self._ring
        size = self._size
        for tick in range(self._cursor, self._cursor + size):
            if ring[tick % size]:
                when = self._origin + tick * self._tick
                # Float rounding must not make the time fall just short of the tick it names.
                while self._tick_of(when) < tick:
                    when = math.nextafter(when, math.inf)
                return when
        return None  # pragma: no cover  # a tracked key always has an entry

    # --- queries

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def last_beat(self, key: K) -> float | None:
        """Clock time of ``key``'s last recorded beat; None if not tracked."""
        return self._last.get(key)

    def identity_of(self, key: K) -> Hashable:
        """Return the identity ``key`` was added with (None if none or not tracked)."""
        return self._identity_of.get(key)

    def key_for(self, identity: Hashable) -> K | None:
        """Return the tracked key bound to ``identity``, or None."""
        return self._by_identity.get(identity)

    def keys(self) -> list[K]:
        """Return a snapshot of the tracked keys."""
        return list(self._last)

    def stats(self) -> HeartbeatStats:
        """Counters since the monitor was made."""
        return HeartbeatStats(len(self._last), self._unknown, self._throttled, self._expired,
                              self._replaced)

    def _check(self) -> None:
        """Assert the wheel's invariants (tests): one entry per live or dead key."""
        entries = [key for slot in self._ring for key in slot]
        counts: dict[K, int] = {}
        for key in entries:
            counts[key] = counts.get(key, 0) + 1
        assert not (self._dead & self._last.keys()), "a key is both live and dead"
        assert set(counts) == self._dead | self._last.keys(), "wheel entries != live + dead keys"
        assert all(n == 1 for n in counts.values()), "a key has two wheel entries"
        assert {self._by_identity[i]: i for i in self._by_identity} == self._identity_of
        assert self._identity_of.keys() <= self._last.keys()


class HeartbeatSender:
    """Client side: when to send a heartbeat so that the server sees life every ``interval``.

    Sans-IO. Tell it about every write (``wrote()``, heartbeats included); ``next_due()`` is
    when a heartbeat is needed because nothing else was written. Each period is
    ``interval * (1 - jitter * r)`` with r uniform in [0, 1), drawn afresh after every
    heartbeat: heartbeats never come later than ``interval``, and clients that all reconnected
    at the same moment drift apart instead of pinging the server in lockstep.
    """

    __slots__ = ("_clock", "_interval", "_jitter", "_last", "_period", "_random")

    def __init__(
        self,
        interval: float,
        *,
        jitter: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._interval = _positive("interval", interval)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise TypeError(f"jitter must be a number, not {type(jitter).__name__}")
        if not 0 <= jitter < 1:
            raise InvalidConfigError("jitter", jitter, "0 <= jitter < 1 (a fraction of interval)")
        self._jitter = float(jitter)
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._last = clock()
        self._period = self._draw()

    def _draw(self) -> float:
        return self._interval * (1.0 - self._jitter * self._random())

    @property
    def interval(self) -> float:
        """The longest time between two writes."""
        return self._interval

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the sender reads (seconds)."""
        return self._clock

    def wrote(self) -> None:
        """Note that something was written now (data or a heartbeat)."""
        self._last = self._clock()

    def sent(self) -> None:
        """Note that a heartbeat was written now; the next period gets a fresh jitter."""
        self._last = self._clock()
        self._period = self._draw()

    def next_due(self) -> float:
        """Clock time at which a heartbeat is due if nothing else is written before."""
        return self._last + self._period

    def due(self) -> bool:
        """Return True when nothing was written for the current period: send a heartbeat."""
        return self._clock() >= self._last + self._period


# --- kernel-assisted liveness


@dataclass(frozen=True, slots=True)
class LivenessPlan:
    """One detection budget split between kernel keepalive, TCP_USER_TIMEOUT and heartbeats.

    Made by ``for_detection(seconds)``: a peer that vanished is found within ``budget``
    seconds of its last sign of life (data, an ACK, a keepalive reply), and an idle peer whose
    kernel still answers keepalive probes is never dropped.

    - ``keepalive``: KeepaliveConfig.for_detection(timeout), so the kernel probes after
      ``keepalive.idle`` seconds of quiet and gives up (keepalive, or TCP_USER_TIMEOUT for data
      in flight) within ``timeout``;
    - ``timeout`` and ``tick``: the HeartbeatMonitor's, with ``timeout + tick == budget``;
    - ``sweep_interval``: every socket's TCP_INFO is read once per this many seconds, small
      enough that an idle live peer's keepalive replies are seen before its timeout:
      ``keepalive.idle + 2 * sweep_interval == timeout``.
    """

    budget: float
    keepalive: KeepaliveConfig
    timeout: float
    tick: float
    sweep_interval: float

    @classmethod
    def for_detection(cls, seconds: float, *, count: int = 3) -> LivenessPlan:
        """Return the plan that finds a vanished peer within ``seconds``.

        ``count`` keepalive probes are sent before the kernel gives up; the budget needs at
        least ``count + 1`` whole seconds after one tick (``seconds / 256``) is taken out.
        """
        budget = _positive("seconds", seconds)
        tick = budget / DEFAULT_TICKS
        timeout = budget - tick
        keepalive = KeepaliveConfig.for_detection(timeout, count=count)
        return cls(budget, keepalive, timeout, tick, (timeout - keepalive.idle) / 2)

    def monitor(
        self, *, min_interval: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> HeartbeatMonitor[Any]:
        """Return a HeartbeatMonitor with this plan's timeout and tick."""
        return HeartbeatMonitor(self.timeout, tick=self.tick, min_interval=min_interval,
                                clock=clock)


@dataclass(frozen=True, slots=True)
class Sweep(Generic[K]):
    """What one KernelLiveness.sweep() call read and decided."""

    #: Sockets whose TCP_INFO was read.
    swept: int
    #: Keys dropped from the monitor, with why: PEER_CLOSED, DEAD or GONE. Close them now.
    reaped: tuple[tuple[K, CloseReason], ...]
    #: Keys that became suspects in this sweep.
    suspects: tuple[K, ...]


_CLOSE_WAIT: Final = int(TcpState.CLOSE_WAIT)
_CLOSE: Final = int(TcpState.CLOSE)

#: The TCP_INFO fields a sweep reads, in offset order (all in the 2.6-era first 104 bytes).
_LIVENESS_FIELDS: Final = ("state", "retransmits", "probes", "backoff", "unacked",
                           "last_data_recv", "last_ack_recv")


def _liveness_unpacker() -> tuple[Callable[[bytes], tuple[int, ...]], int]:
    # One Struct over tcpinfo's own offset table reads all seven at once: reading them as
    # seven TcpInfo properties cost 1.7 us per socket, more than the getsockopt itself.
    fields = sorted((f for f in TCP_INFO_FIELDS
                     if f.name in _LIVENESS_FIELDS and f.until is None and f.bits is None),
                    key=lambda f: f.offset)
    assert tuple(f.name for f in fields) == _LIVENESS_FIELDS, "tcp_info layout changed"
    fmt, at = "=", 0
    for f in fields:
        fmt += "x" * (f.offset - at) + {1: "B", 2: "H", 4: "I", 8: "Q"}[f.size]
        at = f.end
    return struct.Struct(fmt).unpack_from, at


_unpack_liveness, _LIVENESS_SIZE = _liveness_unpacker()


class KernelLiveness(Generic[K]):
    """Feed a HeartbeatMonitor from the kernel: batched TCP_INFO sweeps, no application pings.

    ``add(key, sock)`` tracks a connection in the monitor and sets ``keepalive`` (the plan's,
    with ``for_detection``) on its socket, so the kernel probes an idle peer and a live one
    answers. Each ``sweep()``
    reads TCP_INFO for one shard of at most ``shard_size`` sockets in one native call
    (poll_tcp_info), so no single call stalls a loop, and for each socket:

    - ACK progress is life: the most recent of ``last_ack_recv`` and ``last_data_recv`` is
      recorded as a beat at that time (as HeartbeatMonitor.beat_at does), so an idle peer
      whose kernel answers keepalive probes never expires;
    - CLOSE_WAIT is reaped at once (the peer closed and the application did not; disable
      with ``reap_close_wait=False`` for protocols that answer after a half-close);
    - CLOSE is reaped at once: the kernel itself gave up (keepalive, TCP_USER_TIMEOUT, RST);
    - an OSError (the descriptor was closed elsewhere) is reaped as GONE;
    - unanswered keepalive or zero-window probes, RTO backoff, or unacknowledged data being
      retransmitted make the key a suspect; suspects are read again on every sweep until
      they recover or are reaped.

    A dead peer sends nothing, so its last sign of life stays put and the monitor expires it
    ``timeout`` after that, if the kernel has not reaped it first. A full round over all
    sockets takes ``sweep_interval``; ``next_sweep()`` says when the next shard is due.
    Not thread-safe (HeartbeatThread locks around it).
    """

    def __init__(
        self,
        monitor: HeartbeatMonitor[K],
        *,
        sweep_interval: float,
        keepalive: KeepaliveConfig | None = None,
        shard_size: int = 1024,
        reap_close_wait: bool = True,
    ) -> None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise InvalidConfigError("shard_size", shard_size, "an int >= 1")
        self.monitor = monitor
        self.sweep_interval = _positive("sweep_interval", sweep_interval)
        self.keepalive = keepalive
        self.shard_size = shard_size
        self.reap_close_wait = reap_close_wait
        self._socks: dict[K, Any] = {}
        self._order: list[K] = []  # round-robin order; rebuilt from _socks at each wrap
        self._cursor = 0
        self._suspects: dict[K, None] = {}  # insertion-ordered set
        self._last_sweep = self._round_start = monitor.clock()

    @classmethod
    def for_detection(
        cls,
        seconds: float,
        *,
        count: int = 3,
        shard_size: int = 1024,
        reap_close_wait: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> KernelLiveness[Any]:
        """Return a KernelLiveness (and its monitor) set up by LivenessPlan.for_detection."""
        plan = LivenessPlan.for_detection(seconds, count=count)
        return cls(plan.monitor(clock=clock), sweep_interval=plan.sweep_interval,
                   keepalive=plan.keepalive, shard_size=shard_size,
                   reap_close_wait=reap_close_wait)

    def add(self, key: K, sock: Any = None, *, identity: Hashable = None) -> K | None:
        """Track ``key`` whose socket is ``sock`` (default: the key itself); see monitor.add.

        Applies ``keepalive`` to the socket first (an OSError from a socket that is not TCP
        propagates and nothing is tracked; something that is not a socket is a TypeError).
        Returns the key of the same identity it replaced.
        """
        sock = key if sock is None else sock
        fileno_of(sock)  # a TypeError here, not in every later sweep's batch
        if self.keepalive is not None:
            apply_keepalive(sock, self.keepalive, verify=False)
        dropped = self.monitor.add(key, identity=identity)
        if dropped is not None:
            self._forget(dropped)
        if key not in self._socks:
            self._order.append(key)
        self._socks[key] = sock
        return dropped

    def remove(self, key: K) -> bool:
        """Stop tracking ``key``; False if the monitor did not track it."""
        self._forget(key)
        return self.monitor.remove(key)

    def _forget(self, key: K) -> None:
        self._socks.pop(key, None)
        self._suspects.pop(key, None)

    @property
    def suspects(self) -> tuple[K, ...]:
        """Tracked keys currently showing unanswered probes, backoff or retransmissions."""
        tracked = self.monitor._last
        return tuple(key for key in self._suspects if key in tracked)

    def next_sweep(self) -> float | None:
        """Clock time when the next shard is due; None when no socket is tracked.

        The round's remaining time is split evenly over its remaining shards, so a round
        takes ``sweep_interval`` whatever was reaped or added meanwhile; suspects are read on
        top of a shard, never in place of the round's keys.
        """
        if not self._socks:
            return None
        left = len(self._order) - self._cursor  # round positions left (removed keys too)
        end = self._round_start + self.sweep_interval
        if left <= 0:
            return max(self._last_sweep, end)
        shards = -(-left // self.shard_size)
        return self._last_sweep + max(0.0, end - self._last_sweep) / shards

    def _shard(self, now: float) -> list[K]:
        socks = self._socks
        tracked = self.monitor._last
        # Suspects are read on every sweep, at most half a shard of them, on top of the
        # round's shard: the round goes on at its pace however many suspects there are.
        keys = [key for key in self._suspects if key in tracked][: max(1, self.shard_size // 2)]
        chosen = set(keys)
        order = self._order
        want = min(self.shard_size, len(socks))
        advanced = 0  # round positions this shard covers, read or skipped
        wrapped = False
        while advanced < want:
            if self._cursor >= len(order):
                if wrapped:
                    break
                # A full round: start the next one from the live keys, in arrival order.
                wrapped = True
                order = self._order = list(socks)
                self._cursor = 0
                self._round_start = now
            taken = order[self._cursor : self._cursor + want - advanced]
            self._cursor += len(taken)
            advanced += len(taken)
            for key in taken:
                if key in chosen or key not in socks:
                    continue
                if key not in tracked:  # expired or removed in the monitor meanwhile
                    self._forget(key)
                    continue
                keys.append(key)
                chosen.add(key)
        return keys

    def sweep(self) -> Sweep[K]:
        """Read TCP_INFO for the next shard (suspects first) and act on it; see the class."""
        monitor = self.monitor
        self._last_sweep = now = monitor.clock()
        keys = self._shard(now)
        if not keys:
            return Sweep(0, (), ())
        socks = self._socks
        infos = poll_tcp_info([socks[key] for key in keys])
        reaped: list[tuple[K, CloseReason]] = []
        new_suspects: list[K] = []
        suspects = self._suspects
        reap_close_wait = self.reap_close_wait
        # beat_at() inlined: the sweep is benchmarked per socket next to poll_tcp_info.
        last = monitor._last
        unpack = _unpack_liveness
        for key, info in zip(keys, infos, strict=True):
            if isinstance(info, OSError):
                reason = CloseReason.GONE
            else:
                raw = info.raw
                if len(raw) < _LIVENESS_SIZE:  # pragma: no cover  # pre-2.6.2 kernels
                    continue
                state, retransmits, probes, backoff, unacked, data, ack = unpack(raw)
                if state == _CLOSE_WAIT and reap_close_wait:
                    reason = CloseReason.PEER_CLOSED
                elif state == _CLOSE:
                    reason = CloseReason.DEAD
                else:
                    # ACK progress is life: the later of the last ACK and the last data.
                    seen = now - (ack if ack < data else data) / 1000.0
                    if seen > last[key]:
                        last[key] = seen
                    if probes or backoff or (unacked and retransmits):
                        if key not in suspects:
                            suspects[key] = None
                            new_suspects.append(key)
                    elif key in suspects:
                        del suspects[key]
                    continue
            monitor.remove(key)
            self._forget(key)
            reaped.append((key, reason))
        return Sweep(len(keys), tuple(reaped), tuple(new_suspects))


# --- the thread runner


def close_now(sock: Any) -> None:
    """Close ``sock`` at once: shutdown(SHUT_RDWR) wakes a thread blocked reading it, then close.

    A socket that is already closed or reset is fine.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _unpack_source(
    source: HeartbeatMonitor[K] | KernelLiveness[K],
) -> tuple[HeartbeatMonitor[K], KernelLiveness[K] | None]:
    """Return ``(monitor, kernel)`` for a runner given a monitor or a KernelLiveness."""
    if isinstance(source, KernelLiveness):
        return source.monitor, source
    return source, None


def _grace_value(grace: object) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
    if not (math.isfinite(grace) and grace >= 0):
        raise InvalidConfigError("grace", grace, "a finite number of seconds >= 0")
    return float(grace)


class HeartbeatThread(Generic[K]):
    """Runs a HeartbeatMonitor in one thread that sleeps until the next non-empty tick.

    Give it a HeartbeatMonitor, or a KernelLiveness to also run its TCP_INFO sweeps, one shard
    at a time, in the same thread. Use its ``add``, ``beat`` and ``remove`` from any thread
    (they take a lock around the monitor).

    With ``close=True`` the keys are sockets and the runner closes the ones it drops: an
    expired one gets shutdown(SHUT_WR) at once, so a peer that was merely late can still
    send what it has and reads our FIN, and is closed ``grace`` seconds later
    (shutdown(SHUT_RDWR), which wakes a thread blocked reading it, then close); one replaced
    by a new connection of the same identity, or reaped by a sweep (PEER_CLOSED, DEAD, GONE),
    is closed at once. ``on_close(key, reason)`` is called for every key dropped (from the
    runner thread, or from add()'s caller for REPLACED), after the runner's own closing; with
    ``close=False`` it is the only action.

    The monitor's clock must be ``time.monotonic`` (or tick with it): the thread sleeps on it.
    """

    def __init__(
        self,
        monitor: HeartbeatMonitor[K] | KernelLiveness[K],
        *,
        close: bool = True,
        on_close: Callable[[K, CloseReason], None] | None = None,
        grace: float = 1.0,
        name: str = "pysockopt-heartbeat",
    ) -> None:
        self.monitor, self.kernel = _unpack_source(monitor)
        self.grace = _grace_value(grace)
        self._close_socks = close
        self._on_close = on_close
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing: list[tuple[float, int, Any]] = []  # (when, seq, sock): grace periods
        self._seq = itertools.count()
        self._socks: dict[K, Any] = {}  # key -> its socket, where add() was given one
        self._wake_at: float | None = None  # when the sleeping thread wakes (inf: never)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # Exceptions raised by on_close, by closing a socket, or inside the runner's own
        # step (a sweep, the monitor): recorded here, and the runner goes on.
        self.errors: list[BaseException] = []

    # --- thread-safe front of the monitor

    def add(self, key: K, *, identity: Hashable = None, sock: Any = None) -> K | None:
        """Track ``key``; an older key of the same identity is dropped (REPLACED) and returned.

        ``sock`` is the key's socket (default: the key itself): the one the runner closes
        and, with a KernelLiveness, the one whose TCP_INFO it reads.
        """
        with self._lock:
            if self.kernel is not None:
                dropped = self.kernel.add(key, sock, identity=identity)
            else:
                dropped = self.monitor.add(key, identity=identity)
            if sock is not None and sock is not key:
                self._socks[key] = sock
            else:
                self._socks.pop(key, None)
            wake_at = self._wake_at
            if wake_at is not None:
                # The new key is due by now + timeout + tick (cheaper than next_deadline()).
                monitor = self.monitor
                due = monitor.clock() + monitor.timeout + monitor.tick
                if self.kernel is not None:
                    sweep = self.kernel.next_sweep()
                    if sweep is not None:
                        due = min(due, sweep)
                if due < wake_at:
                    self._wake.notify()
        if dropped is not None:
            self._drop(dropped, CloseReason.REPLACED)
        return dropped

    def beat(self, key: K) -> bool:
        """Record life for ``key`` (see HeartbeatMonitor.beat)."""
        with self._lock:
            return self.monitor.beat(key)

    def remove(self, key: K) -> bool:
        """Stop tracking ``key`` (the application closed it); False if it was not tracked."""
        with self._lock:
            self._socks.pop(key, None)
            if self.kernel is not None:
                return self.kernel.remove(key)
            return self.monitor.remove(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self.monitor)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self.monitor

    # --- lifecycle

    def start(self) -> HeartbeatThread[K]:
        """Start the runner thread; return self."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread; sockets still in their grace period are closed now.

        May be called from ``on_close`` (the runner thread itself): it then does not wait.
        """
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            pending, self._closing = self._closing, []
        self._close_all(sock for _, _, sock in pending)

    def __enter__(self) -> HeartbeatThread[K]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the thread

    def _close_all(self, socks: Iterable[Any]) -> None:
        for sock in socks:
            try:
                close_now(sock)
            except Exception as exc:  # e.g. EBADF: its fd was os.close()d elsewhere
                self.errors.append(exc)

    def _drop(self, key: K, reason: CloseReason) -> None:
        with self._lock:
            sock = self._socks.pop(key, key)
        try:
            if self._close_socks:
                if reason is CloseReason.EXPIRED and self.grace > 0 and not self._stopping:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    when = self.monitor.clock() + self.grace
                    with self._lock:
                        if not self._stopping:
                            heapq.heappush(self._closing, (when, next(self._seq), sock))
                            sock = None
                    if sock is not None:  # stop() ran meanwhile: no grace period left
                        close_now(sock)
                else:
                    close_now(sock)
        except Exception as exc:
            self.errors.append(exc)
        if self._on_close is not None:
            try:
                self._on_close(key, reason)
            except Exception as exc:  # a callback's bug must not kill the runner
                self.errors.append(exc)

    def _run(self) -> None:
        monitor = self.monitor
        kernel = self.kernel
        clock = monitor.clock
        while True:
            due: list[Any] = []
            dropped: list[tuple[K, CloseReason]] = []
            failed = False
            with self._lock:
                if self._stopping:
                    return
                try:
                    dropped += [(key, CloseReason.EXPIRED) for key in monitor.expired()]
                except Exception as exc:
                    self.errors.append(exc)
                    failed = True
                now = clock()
                if kernel is not None:
                    next_sweep = kernel.next_sweep()
                    if next_sweep is not None and next_sweep <= now:
                        try:
                            dropped += kernel.sweep().reaped
                        except Exception as exc:
                            self.errors.append(exc)
                            failed = True
                        now = clock()
                while self._closing and self._closing[0][0] <= now:
                    due.append(heapq.heappop(self._closing)[2])
                if not dropped and not due:
                    wake = [t for t in (monitor.next_deadline(),
                                        kernel.next_sweep() if kernel is not None else None,
                                        self._closing[0][0] if self._closing else None)
                            if t is not None]
                    # After a failure, retry no sooner than a tick: an error must not spin.
                    at = max(min(wake), now + monitor.tick) if failed and wake else (
                        min(wake) if wake else math.inf)
                    self._wake_at = at
                    self._wake.wait(None if at == math.inf else max(0.0, at - now))
                    self._wake_at = None
                    continue
            self._close_all(due)
            for key, reason in dropped:
                self._drop(key, reason)


#: How soon HeartbeatSenderThread retries the rest of a heartbeat a full buffer cut short.
_RETRY: Final = 0.05


class HeartbeatSenderThread:
    """Client side for blocking sockets: a thread that sends ``payload`` when the line is quiet.

    Send everything else through ``send(data)`` (it counts as a write and is serialised with
    the heartbeats); a heartbeat goes out only when nothing was sent for the sender's jittered
    interval (see HeartbeatSender). The heartbeat itself is sent without blocking: when the
    send buffer is full (a dead or stalled peer) data is already queued, so none is needed,
    and stop() never waits on the network. The thread ends when the socket fails or
    ``stop()``.
    """

    def __init__(
        self,
        sock: socket.socket,
        payload: bytes,
        interval: float,
        *,
        jitter: float = 0.2,
        sender: HeartbeatSender | None = None,
    ) -> None:
        if not isinstance(payload, (bytes, bytearray, memoryview)) or not payload:
            raise TypeError("payload must be non-empty bytes")
        self.sock = sock
        self.payload = bytes(payload)
        self.sender = sender or HeartbeatSender(interval, jitter=jitter)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pysockopt-heartbeat-sender",
                                        daemon=True)
        self.error: OSError | None = None  # why the thread ended, if the socket failed
        self._pending = b""  # the unsent rest of a heartbeat
        self._retry_at = 0.0

    def send(self, data: bytes) -> None:
        """Send ``data`` (sendall) and note the write."""
        with self._lock:
            if self._pending:  # the rest of a heartbeat first, so frames never interleave
                self.sock.sendall(self._pending)
                self._pending = b""
                self.sender.sent()
            self.sock.sendall(data)
            self.sender.wrote()

    def start(self) -> HeartbeatSenderThread:
        """Start the thread; return self."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop sending heartbeats (the socket is left open); wait at most ``timeout`` s."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> HeartbeatSenderThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        clock = self.sender.clock
        while not self._stop.is_set():
            with self._lock:
                due = self._retry_at if self._pending else self.sender.next_due()
                delay = due - clock()
                if delay <= 0:
                    try:
                        self._send_heartbeat()
                    except OSError as err:
                        self.error = err
                        return
                    continue
            self._stop.wait(delay)

    def _send_heartbeat(self) -> None:
        # Never blocks (the lock is held): with a dead peer the send buffer fills, and a
        # blocking send would hang here, and stop() and send() with it, for many minutes.
        data = self._pending or self.payload
        try:
            n = self.sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, TimeoutError):
            n = 0
        if n == 0 and not self._pending:
            # Buffer full: data is already queued for the peer, no heartbeat needed now.
            self.sender.wrote()
            return
        self._pending = data[n:]
        if self._pending:  # cut short by a full buffer: the rest goes out before anything
            self._retry_at = self.sender.clock() + _RETRY
        else:
            self.sender.sent()
