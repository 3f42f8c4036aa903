"""The sans-IO heartbeat monitor: which connections fell silent for ``timeout``.

``HeartbeatMonitor`` knows nothing of sockets, threads or event loops: it is told when a
connection arrives (``add``), shows life (``beat``) or goes away (``remove``), and answers which
ones have been silent for ``timeout`` (``expired``). Runners sit on top (thread.py, aio.py);
liveness.py feeds it from the kernel's TCP_INFO.

The three dead-peer cases (docs/heartbeat.md):

- a live peer whose heartbeat is late: the runners close with shutdown(SHUT_WR) first and
  keep reading for a grace period, so nothing the peer still sends is lost;
- a dead peer: found after ``timeout`` (at most one ``tick`` later);
- a peer that died and reconnected before anyone noticed: ``add(key, identity=...)`` drops
  the older connection of the same identity at once, so stale ESTABLISHED and CLOSE_WAIT
  connections do not pile up until the next sweep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar

from .._validate import check_number, check_seconds
from ..errors import InvalidConfigError

__all__ = ["DEFAULT_TICKS", "MAX_TICKS", "CloseReason", "HeartbeatMonitor", "HeartbeatStats"]

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
        self._timeout = check_seconds("timeout", timeout)
        self._tick = self._timeout / DEFAULT_TICKS if tick is None else check_seconds("tick", tick)
        if self._tick > self._timeout or self._timeout / self._tick > MAX_TICKS:
            raise InvalidConfigError(
                "tick", tick, f"timeout / {MAX_TICKS} .. timeout ({self._timeout:g} s)"
            )
        self._inv_tick = 1.0 / self._tick
        self._min_interval = check_number("min_interval", min_interval, 0, self._timeout,
                                          allowed="0 (off) .. below timeout")
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
        throttled. Unknown keys are counted like beat()'s. ``when`` must be a real number: NaN
        would compare false with every deadline and leave the key tracked forever.
        """
        if isinstance(when, bool) or not isinstance(when, (int, float)):
            raise TypeError(f"when must be a clock time in seconds, not {type(when).__name__}")
        if math.isnan(when):
            raise ValueError("when is NaN, not a clock time")
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

    def beat_many_at(self, beats: Iterable[tuple[K, float]]) -> None:
        """Record many ``(key, when)`` sightings at once, as beat_at does for each.

        For a caller that read the times from the kernel for a batch of keys (KernelLiveness):
        each tracked key's last beat moves forward to ``when`` if that is later (a time in the
        future counts as now, as in beat_at); untracked keys and times that are not finite
        numbers are skipped without being counted.
        """
        last = self._last
        get = last.get
        now = self._clock()
        for key, when in beats:
            previous = get(key)
            if previous is not None and when > previous:  # False for NaN
                last[key] = when if when <= now else now  # +inf and the future: now

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
