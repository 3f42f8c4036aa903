"""Kernel-assisted liveness: feed a HeartbeatMonitor from batched TCP_INFO reads.

``LivenessPlan.for_detection(seconds)`` splits one detection budget between kernel keepalive,
TCP_USER_TIMEOUT and the monitor's timeout; ``KernelLiveness`` sweeps every tracked socket's
TCP_INFO in shards (one native call each), records ACK progress as life, and reaps sockets the
kernel already knows are dead or half-closed.
"""

from __future__ import annotations

import heapq
import math
import struct
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from .._sock import fileno_of
from .._validate import check_int, check_seconds
from ..errors import InvalidConfigError
from ..keepalive import KeepaliveConfig, apply_keepalive
from ..tcpinfo import TCP_INFO_FIELDS, TcpState, poll_tcp_info
from .monitor import DEFAULT_TICKS, CloseReason, HeartbeatMonitor

__all__ = ["KernelLiveness", "LivenessPlan", "Sweep"]

K = TypeVar("K", bound=Hashable)

#: How late, as a fraction of ``keepalive.idle``, an idle live peer's next keepalive reply
#: may come. The kernel files a timer ``d`` jiffies away in a timer-wheel level whose
#: granularity is at most 8/63 of ``d`` (one jiffy below 63) and fires it at the next tick of
#: that granularity: 0.26 s late for 3 s at HZ=250. 1/7 covers that and leaves ``idle / 63``
#: (16 ms per second of idle) for a jiffy of rounding and the probe's round trip.
KEEPALIVE_SLACK: Final = 1 / 7


@dataclass(frozen=True, slots=True)
class LivenessPlan:
    """One detection budget split between kernel keepalive, TCP_USER_TIMEOUT and heartbeats.

    Made by ``for_detection(seconds)``: a peer that vanished is found within ``budget``
    seconds of its last sign of life (data, an ACK, a keepalive reply), and an idle peer whose
    kernel still answers keepalive probes is never dropped.

    - ``keepalive``: KeepaliveConfig.for_detection(budget), so the kernel probes after
      ``keepalive.idle`` seconds of quiet, drops an idle vanished peer after
      ``keepalive.detection_time`` (about half the budget) and, whatever is written,
      within ``keepalive.worst_case_detection <= budget`` (the same derivation, the same
      worst case);
    - ``timeout`` and ``tick``: the HeartbeatMonitor's, with ``timeout + tick == budget``;
    - ``sweep_interval``: every socket's TCP_INFO is read at most this many seconds apart
      (KernelLiveness keeps each socket's place in the round), with room to spare:
      ``keepalive.idle * (1 + KEEPALIVE_SLACK) + 2 * sweep_interval == timeout``.

    The worst case for an idle live peer: its kernel answers a probe at most
    ``keepalive.idle * (1 + KEEPALIVE_SLACK)`` after its previous sign of life (the kernel
    fires the keepalive timer late, see KEEPALIVE_SLACK), the next sweep of its socket reads
    that at most ``sweep_interval`` later, and the second ``sweep_interval`` is the margin
    against loop lag: a sweep may run that late before such a peer could be dropped.
    """

    budget: float
    keepalive: KeepaliveConfig
    timeout: float
    tick: float
    sweep_interval: float

    @classmethod
    def for_detection(cls, seconds: float, *, count: int = 3) -> LivenessPlan:
        """Return the plan that finds a vanished peer within ``seconds``.

        ``count`` keepalive probes are sent before the kernel gives up; the budget must
        hold them and their user timeout as KeepaliveConfig.for_detection requires (3 s for
        one probe, just over ``2 * count + 1`` s for more). Out of range, the
        InvalidConfigError says the nearest ``seconds`` that works for this ``count``.
        """
        budget = check_seconds("seconds", seconds)
        plan = cls._split(budget, count)
        if plan is None:
            raise cls._out_of_range(seconds, count)
        return plan

    @classmethod
    def _split(cls, budget: float, count: int) -> LivenessPlan | None:
        # The plan's arithmetic; None when ``budget`` cannot be split for ``count`` probes.
        tick = budget / DEFAULT_TICKS
        timeout = budget - tick
        try:
            keepalive = KeepaliveConfig.for_detection(budget, count=count)
        except InvalidConfigError as err:
            if err.field != "seconds":  # a bad count is the caller's error as it stands
                raise
            return None
        reply_gap = keepalive.idle * (1 + KEEPALIVE_SLACK)  # a live idle peer's, at worst
        sweep_interval = (timeout - reply_gap) / 2
        if sweep_interval <= 0:
            return None
        return cls(budget, keepalive, timeout, tick, sweep_interval)

    @classmethod
    def _out_of_range(cls, seconds: float, count: int) -> InvalidConfigError:
        # Say what to pass, found with the plan's own arithmetic (so it stays right whatever
        # the split): the nearest budget, to 1 ms, for which _split works.
        def works(budget: float) -> bool:
            return cls._split(budget, count) is not None

        near, bad = None, float(seconds)
        for power in range(1, 64):  # the nearest working power-of-two multiple
            for candidate in (seconds * 2**power, seconds / 2**power):
                if near is None and works(candidate):
                    near = candidate
            if near is not None:
                break
        why = ("it holds keepalive's idle time, its probes and their user timeout "
               "(KeepaliveConfig.for_detection), and the sweeps' margin")
        if near is None:  # pragma: no cover  # no budget works for this count
            return InvalidConfigError("seconds", seconds, f"none for count={count}", why)
        while abs(near - bad) > 0.0001:  # bisect to the edge
            middle = (near + bad) / 2
            if works(middle):
                near = middle
            else:
                bad = middle
        step = 0.001 if near > seconds else -0.001
        edge = (math.ceil if step > 0 else math.floor)(round(near * 1000, 6)) / 1000
        while not works(edge):  # pragma: no cover  # rounding landed just outside
            edge += step
        side = "at least" if step > 0 else "at most"
        allowed = f"{side} {edge:.3f}".rstrip("0").rstrip(".") + f" s for count={count}"
        return InvalidConfigError("seconds", seconds, allowed, why)

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


def _phase(index: int) -> float:
    """Where slot ``index`` is read in a round, as a fraction of it: 0, 1/2, 1/4, 3/4, 1/8...

    Bit reversal (the van der Corput sequence): however many slots there are, their reads
    are spread over the round, and a new slot never moves the others'.
    """
    fraction, half = 0.0, 0.5
    while index:
        if index & 1:
            fraction += half
        index >>= 1
        half /= 2
    return fraction


class KernelLiveness(Generic[K]):
    """Feed a HeartbeatMonitor from the kernel: batched TCP_INFO sweeps, no application pings.

    ``add(key, sock)`` tracks a connection in the monitor and sets ``keepalive`` (the plan's,
    with ``for_detection``) on its socket, so the kernel probes an idle peer and a live one
    answers. Each ``sweep()`` reads TCP_INFO for one slot of at most ``shard_size`` sockets in
    one native call (poll_tcp_info), so no single call stalls a loop, and for each socket:

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
    ``timeout`` after that, if the kernel has not reaped it first.

    Each socket keeps one slot for as long as it is tracked, and each slot is read once per
    ``sweep_interval``, always at the same point of the round: a slot's reads are
    ``sweep_interval`` apart whatever is added or removed meanwhile (a new socket joins a
    slot with room, or a new slot; a removed one leaves a gap). So a socket waits at most
    ``sweep_interval`` between two reads, plus however late the caller sweeps;
    ``next_sweep()`` says when the next slot is due. Not thread-safe (HeartbeatThread locks
    around it).
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
        check_int("shard_size", shard_size, 1)
        self.monitor = monitor
        self.sweep_interval = check_seconds("sweep_interval", sweep_interval)
        self.keepalive = keepalive
        self.shard_size = shard_size
        self.reap_close_wait = reap_close_wait
        self._slots: list[dict[K, Any]] = []  # slot -> {key: its socket}
        self._slot_of: dict[K, int] = {}
        self._room: set[int] = set()  # slots with fewer than shard_size keys
        self._due: list[tuple[float, int]] = []  # heap of (when, slot) of non-empty slots
        self._queued: set[int] = set()  # the slots in _due
        self._suspects: dict[K, None] = {}  # insertion-ordered set
        self._epoch = monitor.clock()  # slot i is due at epoch + (n + _phase(i)) * interval

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
        Returns the key of the same identity it replaced. A key already tracked keeps its
        slot (its socket may change).
        """
        sock = key if sock is None else sock
        fileno_of(sock)  # a TypeError here, not in every later sweep's batch
        if self.keepalive is not None:
            apply_keepalive(sock, self.keepalive, verify=False)
        dropped = self.monitor.add(key, identity=identity)
        if dropped is not None:
            self._forget(dropped)
        index = self._slot_of.get(key)
        if index is None:
            index = self._slot_with_room()
            self._slot_of[key] = index
        slot = self._slots[index]
        slot[key] = sock
        if len(slot) >= self.shard_size:
            self._room.discard(index)
        if index not in self._queued:
            self._queued.add(index)
            heapq.heappush(self._due, (self._due_after(index, self.monitor.clock()), index))
        return dropped

    def _slot_with_room(self) -> int:
        if self._room:
            return next(iter(self._room))
        self._slots.append({})
        index = len(self._slots) - 1
        self._room.add(index)
        return index

    def _due_after(self, index: int, when: float) -> float:
        # The first time after ``when`` on slot ``index``'s own grid, one interval apart.
        interval = self.sweep_interval
        base = self._epoch + _phase(index) * interval
        due = base + (math.floor((when - base) / interval) + 1) * interval
        return due if due > when else due + interval

    def remove(self, key: K) -> bool:
        """Stop tracking ``key``; False if the monitor did not track it."""
        self._forget(key)
        return self.monitor.remove(key)

    def _forget(self, key: K) -> None:
        index = self._slot_of.pop(key, None)
        if index is not None:
            slot = self._slots[index]
            del slot[key]
            if len(slot) < self.shard_size:
                self._room.add(index)
        self._suspects.pop(key, None)

    @property
    def suspects(self) -> tuple[K, ...]:
        """Tracked keys currently showing unanswered probes, backoff or retransmissions."""
        tracked = self.monitor
        return tuple(key for key in self._suspects if key in tracked)

    def next_sweep(self) -> float | None:
        """Clock time when the next slot is due (maybe past); None when no socket is tracked.

        Each slot is due once per ``sweep_interval`` at its own fixed point of the round,
        whatever was reaped or added meanwhile; suspects are read on top of a slot, never in
        place of its keys. Sweeping at (or after) this time keeps every socket's reads at
        most ``sweep_interval`` apart, plus the sweep's own lateness.
        """
        due = self._due
        slots = self._slots
        while due and not slots[due[0][1]]:  # emptied since it was queued
            self._queued.discard(heapq.heappop(due)[1])
        return due[0][0] if due else None

    def _next_slot(self, now: float) -> int | None:
        if self.next_sweep() is None:
            return None
        when, index = self._due[0]
        # Its next read is one interval after this one was due, on its own grid: a late
        # sweep does not shift the slot (only one more than an interval late skips a read).
        heapq.heapreplace(self._due, (self._due_after(index, max(when, now)), index))
        return index

    def sweep_due(self) -> list[tuple[K, CloseReason]]:
        """Sweep every slot that is due by now (each once); return what they reaped.

        What a runner calls when a sweep timer fires: after the loop ran late it catches up
        with every overdue slot at once, and a timer that fired early reads nothing.
        """
        now = self.monitor.clock()
        reaped: list[tuple[K, CloseReason]] = []
        while (due := self.next_sweep()) is not None and due <= now:
            reaped += self.sweep().reaped
        return reaped

    def expired(self) -> list[tuple[K, CloseReason]]:
        """Ask the kernel first, then the monitor: the keys to close now, with why.

        Every overdue slot is swept before the monitor's expired() is asked, so a socket is
        never expired on a reading older than ``sweep_interval``: an idle peer whose kernel
        answers keepalive probes is not dropped however late the caller runs (a stalled
        loop). Returns the reaped keys (PEER_CLOSED, DEAD, GONE), then the EXPIRED ones.
        """
        dropped = self.sweep_due()
        dropped += [(key, CloseReason.EXPIRED) for key in self.monitor.expired()]
        return dropped

    def sweep(self) -> Sweep[K]:
        """Read TCP_INFO for the next slot (suspects first) and act on it; see the class."""
        monitor = self.monitor
        now = monitor.clock()
        index = self._next_slot(now)
        if index is None:
            return Sweep(0, (), ())
        slot = self._slots[index]
        keys = list(slot)
        socks = list(slot.values())
        tracked = monitor
        stale = [key for key in keys if key not in tracked]
        if stale:  # expired or removed in the monitor meanwhile
            for key in stale:
                self._forget(key)
            keys = list(slot)
            socks = list(slot.values())
        suspects = self._suspects
        if suspects:
            # Suspects are read on every sweep, at most half a shard of them, on top of the
            # slot: the round goes on at its pace however many suspects there are.
            slot_of = self._slot_of
            extra = [key for key in suspects
                     if slot_of[key] != index and key in tracked][: max(1, self.shard_size // 2)]
            if extra:
                socks = [self._slots[slot_of[key]][key] for key in extra] + socks
                keys = extra + keys
        if not keys:
            return Sweep(0, (), ())
        infos = poll_tcp_info(socks)
        reaped: list[tuple[K, CloseReason]] = []
        new_suspects: list[K] = []
        reap_close_wait = self.reap_close_wait
        seen_at: list[tuple[K, float]] = []
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
                    seen_at.append((key, now - (ack if ack < data else data) / 1000.0))
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
        monitor.beat_many_at(seen_at)
        return Sweep(len(keys), tuple(reaped), tuple(new_suspects))
