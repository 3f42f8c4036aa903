from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable, Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pysockopt import (
    CloseReason,
    HeartbeatMonitor,
    HeartbeatSender,
    HeartbeatSenderThread,
    HeartbeatThread,
    InvalidConfigError,
)
from pysockopt.aio import AsyncHeartbeats, send_heartbeats


class FakeClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


def monitor(timeout: float = 1.0, tick: float = 0.25, start: float = 0.0,
            **kw: float) -> tuple[HeartbeatMonitor[Hashable], FakeClock]:
    clock = FakeClock(start)
    return HeartbeatMonitor(timeout, tick=tick, clock=clock, **kw), clock


# --- sans-IO: the monitor


def test_silent_key_expires_inside_the_detection_window() -> None:
    m, clock = monitor(timeout=1.0, tick=0.25)
    assert m.detection_window == (1.0, 1.25)
    m.add("a")
    m.add("b")
    found_at = None
    for _ in range(12):  # a runner asks at least once per tick; here every 1/8 s
        clock.advance(0.125)
        m.beat("b")
        got = m.expired()
        if got:
            assert got == ["a"] and found_at is None
            found_at = clock.now
    assert found_at is not None and 1.0 <= found_at <= 1.25
    assert "a" not in m and "b" in m and len(m) == 1
    m._check()


def test_beats_keep_a_key_alive_and_expired_removes_it_once() -> None:
    m, clock = monitor()
    m.add("k")
    for _ in range(40):  # 5 s of beats every 0.125 s: never expires
        clock.advance(0.125)
        assert m.beat("k")
        assert m.expired() == []
    clock.advance(1.25)
    assert m.expired() == ["k"]
    clock.advance(5)
    assert m.expired() == [] and len(m) == 0
    assert m.stats().expired == 1


def test_never_expires_before_timeout_even_when_asked_late() -> None:
    m, clock = monitor(timeout=1.0, tick=0.25)
    m.add("old")
    clock.advance(0.75)
    m.add("young")
    clock.advance(10)  # nobody asked for 40 ticks: more than a turn of the wheel
    assert sorted(m.expired()) == ["old", "young"]
    m.add("x")
    clock.advance(0.999)
    assert m.expired() == []
    m._check()


def test_same_identity_drops_the_older_key_at_once() -> None:
    m, clock = monitor()
    assert m.add("conn1", identity="alice") is None
    assert m.add("conn2", identity="bob") is None
    clock.advance(0.1)
    assert m.add("conn3", identity="alice") == "conn1"  # at once, no sweep needed
    assert "conn1" not in m and m.key_for("alice") == "conn3"
    assert m.identity_of("conn3") == "alice" and m.identity_of("conn1") is None
    assert m.beat("conn1") is False  # the old connection's late beats are unknown
    assert m.stats().replaced == 1 and m.stats().unknown_beats == 1
    assert m.add("conn3", identity="alice") is None  # re-adding the same key is a beat
    assert m.add("conn3", identity="carol") is None  # re-binds
    assert m.key_for("alice") is None and m.key_for("carol") == "conn3"
    clock.advance(2)
    assert sorted(m.expired()) == ["conn2", "conn3"]
    assert m.key_for("carol") is None and m.key_for("bob") is None
    m._check()


def test_remove_and_readd_reuse_one_wheel_entry() -> None:
    m, clock = monitor()
    for _ in range(50):
        m.add("k")
        assert m.remove("k")
        assert not m.remove("k")
        clock.advance(0.01)
    m.add("k")
    m._check()  # exactly one entry for "k" however often it came and went
    clock.advance(0.5)
    assert m.expired() == []
    clock.advance(1.0)
    assert m.expired() == ["k"]


def test_unknown_and_throttled_beats_are_counted_and_ignored() -> None:
    m, clock = monitor(min_interval=0.1)
    m.add("k")
    assert m.beat("nobody") is False
    assert m.beat("k") is False  # 0 s after add
    clock.advance(0.05)
    assert m.beat("k") is False
    clock.advance(0.05)
    assert m.beat("k") is True and m.last_beat("k") == pytest.approx(0.1)
    stats = m.stats()
    assert (stats.unknown_beats, stats.throttled_beats, stats.tracked) == (1, 2, 1)
    # A flooding peer is stored at most every min_interval, and still counts as alive.
    for _ in range(100):
        clock.advance(0.01)
        m.beat("k")
        assert m.expired() == []
    assert m.stats().throttled_beats > 80


def test_beat_at_only_moves_forward() -> None:
    m, clock = monitor()
    m.add("k")
    clock.advance(0.5)
    assert m.beat_at("k", 0.3) and m.last_beat("k") == 0.3
    assert not m.beat_at("k", 0.2) and m.last_beat("k") == 0.3
    assert m.beat_at("k", 99.0) and m.last_beat("k") == 0.5  # the future counts as now
    assert not m.beat_at("ghost", 0.4) and m.stats().unknown_beats == 1


def test_expired_costs_ticks_and_due_keys_not_tracked_keys() -> None:
    n, timeout = 20_000, 8.0
    clock = FakeClock()
    m: HeartbeatMonitor[int] = HeartbeatMonitor(timeout, clock=clock)
    ticks = round(timeout / m.tick)
    for key in range(n):  # arrivals spread over one timeout, asked each tick like a runner
        clock.now = key * timeout / n
        m.add(key)
        if key % (n // ticks) == 0:
            assert m.expired() == []
    worst = 0
    chunk = n * 3 // ticks
    for step in range(3 * ticks):
        # Round robin: everyone beats every timeout / 3, nobody expires.
        clock.now = timeout + step * m.tick
        for i in range(step * chunk, (step + 1) * chunk):
            m.beat(i % n)
        assert m.expired() == []
        worst = max(worst, m._visited)
        clock.now += m.tick / 2  # same tick again: nothing to look at
        assert m.expired() == [] and m._visited == 0
    assert worst <= 4 * n / ticks, worst  # a tick's slot, not the whole population
    assert worst > 0


def test_next_deadline_names_the_tick_that_has_work() -> None:
    m, clock = monitor(timeout=1.0, tick=0.25)
    assert m.next_deadline() is None
    m.add("a")
    assert m.next_deadline() == 1.25
    clock.now = 1.25
    assert m.expired() == ["a"]
    assert m.next_deadline() is None


@given(st.floats(0, 1e6), st.sampled_from([0.3, 0.1, 1 / 3, 7.0, 0.013]),
       st.integers(2, 100))
def test_next_deadline_is_never_a_tick_too_early(origin: float, tick: float, ticks: int) -> None:
    # A runner that wakes at next_deadline() must find that tick due, or it spins.
    clock = FakeClock(origin)
    m: HeartbeatMonitor[str] = HeartbeatMonitor(tick * ticks, tick=tick, clock=clock)
    m.add("k")
    for _ in range(3):
        deadline = m.next_deadline()
        assert deadline is not None
        clock.now = deadline
        m.expired()
        assert m._visited == 1 or "k" not in m
        if "k" not in m:
            break
        m.beat("k")


@pytest.mark.parametrize("kwargs", [
    {"timeout": 0}, {"timeout": -1}, {"timeout": float("nan")}, {"timeout": float("inf")},
    {"timeout": 1, "tick": 2}, {"timeout": 10, "tick": 0.0001}, {"timeout": 1, "tick": 0},
    {"timeout": 1, "min_interval": 1}, {"timeout": 1, "min_interval": -0.1},
])
def test_bad_monitor_config_is_a_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidConfigError):
        HeartbeatMonitor(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1", None, True])
def test_non_numbers_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError):
        HeartbeatMonitor(value)  # type: ignore[arg-type]


# --- sans-IO: hypothesis against a brute-force model

KEYS = st.integers(0, 7)
IDENTITIES = st.none() | st.sampled_from(["a", "b", "c"])
STEPS = st.integers(0, 48).map(lambda n: n / 16)  # dyadic: the model's float math is exact


class MonitorMachine(RuleBasedStateMachine):
    """Every call on the monitor is checked against a dict scanned in full each time."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.m: HeartbeatMonitor[int] | None = None
        self.last: dict[int, float] = {}
        self.ident: dict[int, str] = {}

    @precondition(lambda self: self.m is None)
    @rule(timeout=st.sampled_from([0.5, 1.0, 2.0]), ticks=st.sampled_from([1, 2, 4, 8]),
          floor=st.sampled_from([0.0, 0.125]))
    def make(self, timeout: float, ticks: int, floor: float) -> None:
        self.m = HeartbeatMonitor(timeout, tick=timeout / ticks, min_interval=floor,
                                  clock=self.clock)

    @precondition(lambda self: self.m is not None)
    @rule(key=KEYS, identity=IDENTITIES)
    def add(self, key: int, identity: str | None) -> None:
        assert self.m is not None
        expected = None
        if identity is not None:
            holder = [k for k, i in self.ident.items() if i == identity and k != key]
            if holder:
                expected = holder[0]
                del self.last[expected], self.ident[expected]
        assert self.m.add(key, identity=identity) == expected
        self.last[key] = self.clock.now
        self.ident.pop(key, None)
        if identity is not None:
            self.ident[key] = identity

    @precondition(lambda self: self.m is not None)
    @rule(key=KEYS)
    def beat(self, key: int) -> None:
        assert self.m is not None
        now = self.clock.now
        recorded = key in self.last and now - self.last[key] >= self.m.min_interval
        assert self.m.beat(key) is recorded
        if recorded:
            self.last[key] = now

    @precondition(lambda self: self.m is not None)
    @rule(key=KEYS)
    def remove(self, key: int) -> None:
        assert self.m is not None
        assert self.m.remove(key) is (key in self.last)
        self.last.pop(key, None)
        self.ident.pop(key, None)

    @rule(dt=STEPS)
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @precondition(lambda self: self.m is not None)
    @rule()
    def expired(self) -> None:
        m = self.m
        assert m is not None
        now = self.clock.now
        got = m.expired()
        assert len(got) == len(set(got))
        for key in got:  # never early
            assert key in self.last and now - self.last[key] >= m.timeout
        for key, last in self.last.items():  # never later than timeout + tick
            if now - last >= m.timeout + m.tick:
                assert key in got
        for key in got:
            del self.last[key]
            self.ident.pop(key, None)

    @invariant()
    def agrees(self) -> None:
        if self.m is None:
            return
        self.m._check()
        assert len(self.m) == len(self.last)
        assert {k: self.m.last_beat(k) for k in self.last} == self.last
        assert {k: self.m.identity_of(k) for k in self.ident} == self.ident


MonitorMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                            deadline=None)
test_monitor_matches_model = MonitorMachine.TestCase


# --- sans-IO: the client-side sender


def test_sender_sends_only_when_nothing_else_was_written() -> None:
    clock = FakeClock()
    s = HeartbeatSender(1.0, jitter=0.2, clock=clock, rng=random.Random(1))
    assert 0.8 <= s.next_due() <= 1.0
    for _ in range(20):  # busy: a write every 0.5 s, no heartbeat ever due
        clock.advance(0.5)
        assert not s.due()
        s.wrote()
    clock.advance(1.0)
    assert s.due()
    s.sent()
    assert not s.due() and clock.now + 0.8 <= s.next_due() <= clock.now + 1.0


def test_jitter_spreads_clients_that_connected_together() -> None:
    clock = FakeClock()
    rng = random.Random(2)
    senders = [HeartbeatSender(10.0, jitter=0.3, clock=clock, rng=rng) for _ in range(1000)]
    for _ in range(5):  # five heartbeats each
        for s in senders:
            clock_now = s.next_due()
            assert s.next_due() <= clock_now
        for s in senders:
            s._last = s.next_due()  # as if each sent exactly when due
            s._period = s._draw()
    due = sorted(s.next_due() for s in senders)
    assert due[-1] - due[0] > 5.0  # spread over seconds, not one burst
    assert all(7.0 * 5 <= d <= 10.0 * 6 for d in due)
    assert HeartbeatSender(10.0, jitter=0, clock=clock).next_due() == clock.now + 10.0


@pytest.mark.parametrize("jitter", [1.0, -0.1, 2])
def test_bad_jitter(jitter: float) -> None:
    with pytest.raises(InvalidConfigError):
        HeartbeatSender(1.0, jitter=jitter)
