from __future__ import annotations

import ast
import asyncio
import contextlib
import errno
import importlib
import inspect
import math
import os
import pathlib
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from netns import NetnsPair
from waiting import await_for, wait_for

from pysockopt import (
    CloseReason,
    HeartbeatMonitor,
    HeartbeatSender,
    HeartbeatSenderThread,
    HeartbeatThread,
    InvalidConfigError,
    KeepaliveConfig,
    KernelLiveness,
    LivenessPlan,
    TcpState,
    read_keepalive,
    tcp_info,
)
from pysockopt.aio import AsyncHeartbeats, send_heartbeats
from pysockopt.heartbeat.liveness import KEEPALIVE_SLACK


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
    assert sorted(map(str, m.expired())) == ["old", "young"]
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
    assert sorted(map(str, m.expired())) == ["conn2", "conn3"]
    assert m.key_for("carol") is None and m.key_for("bob") is None
    m._check()


def test_an_unhashable_key_changes_nothing() -> None:
    m, _ = monitor()
    m.add("conn1", identity="alice")
    with pytest.raises(TypeError):
        m.add([], identity="alice")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        m.add("conn2", identity=[])  # type: ignore[arg-type]
    assert m.key_for("alice") == "conn1" and "conn1" in m and m.stats().replaced == 0
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


@pytest.mark.parametrize("origin,timeout,ticks", [
    (0.0, 0.3, 3), (0.0, 15.4, 2), (3.8, 0.3, 3), (272148610.0, 1.0, 3537)])
def test_a_key_is_due_at_exactly_timeout_plus_tick(origin: float, timeout: float,
                                                   ticks: int) -> None:
    # Float rounding once put such a key one tick late (0.3 * (1 / 0.1) floors to 2).
    clock = FakeClock(origin)
    m: HeartbeatMonitor[str] = HeartbeatMonitor(timeout, tick=timeout / ticks, clock=clock)
    m.add("k")
    clock.now = origin + m.timeout + m.tick
    assert m.expired() == ["k"]


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

    #: Slack for float rounding in the model's checks (the dyadic model needs none).
    slack = 0.0

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
    @rule(key=KEYS, ago=STEPS)
    def beat_at(self, key: int, ago: float) -> None:  # the kernel saw an ACK `ago` s back
        assert self.m is not None
        when = self.clock.now - ago
        newer = key in self.last and when > self.last[key]
        assert self.m.beat_at(key, when) is newer
        if newer:
            self.last[key] = when

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
            assert key in self.last and now - self.last[key] >= m.timeout - self.slack
        for key, last in self.last.items():  # never later than timeout + tick
            if now - last >= m.timeout + m.tick + self.slack:
                assert key in got, (key, now - last, m.timeout, m.tick)
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
test_monitor_matches_model = pytest.mark.slow(MonitorMachine.TestCase)


class FloatMonitorMachine(MonitorMachine):
    """The same model on a clock far from zero, with ticks that are not binary fractions."""

    slack = 1e-6

    @precondition(lambda self: self.m is None)
    @rule(origin=st.floats(0, 1e9), timeout=st.sampled_from([0.5, 1.0, 2.0, 15.4, 0.3]),
          ticks=st.integers(1, 4096), floor=st.sampled_from([0.0, 0.125]))
    def make_float(self, origin: float, timeout: float, ticks: int, floor: float) -> None:
        self.clock.now = origin
        self.m = HeartbeatMonitor(timeout, tick=timeout / ticks, min_interval=floor,
                                  clock=self.clock)

    @precondition(lambda self: False)
    @rule()
    def make(self) -> None:  # replaced by make_float
        raise AssertionError("unreachable")


FloatMonitorMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                                 deadline=None)
test_monitor_matches_model_on_float_clocks = pytest.mark.slow(FloatMonitorMachine.TestCase)


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
    for _ in range(5):  # five heartbeats each, each sent exactly when due
        for s in senders:
            clock.now = s.next_due()
            assert s.due()
            s.sent()
            assert not s.due() and clock.now + 7.0 <= s.next_due() <= clock.now + 10.0
    due = sorted(s.next_due() for s in senders)
    assert due[-1] - due[0] > 5.0  # spread over seconds, not one burst
    assert all(7.0 * 5 <= d <= 10.0 * 6 for d in due)
    assert HeartbeatSender(10.0, jitter=0, clock=clock).next_due() == clock.now + 10.0


@pytest.mark.parametrize("jitter", [1.0, -0.1, 2])
def test_bad_jitter(jitter: float) -> None:
    with pytest.raises(InvalidConfigError):
        HeartbeatSender(1.0, jitter=jitter)


# --- real sockets: helpers


CLOSE_WAIT = TcpState.CLOSE_WAIT


def server_side_states(port: int) -> dict[int, int]:
    """{remote port: kernel state number} of the sockets whose local port is ``port``."""
    states = {}
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) == port and int(state, 16) != 10:  # not LISTEN
                states[int(remote.split(":")[1], 16)] = int(state, 16)
    return states


async def wait_for_eof(reader: asyncio.StreamReader, limit: float) -> float:
    """Read until EOF (the server's FIN); return when it came (loop time)."""
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(reader.read(), limit)
    return loop.time()


# --- real sockets: the asyncio runner


class AsyncServer:
    """A line-identity server: the first line names the client, the rest is data."""

    def __init__(self, hb: AsyncHeartbeats, *, close_on_eof: bool = True) -> None:
        self.hb = hb
        self.close_on_eof = close_on_eof
        self.received: dict[str, bytearray] = {}
        self.writers: dict[str, list[asyncio.StreamWriter]] = {}
        self.readers: dict[str, list[asyncio.StreamReader]] = {}
        self.port = 0
        self._server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = (await reader.readline()).decode().strip()
        self.writers.setdefault(name, []).append(writer)
        self.readers.setdefault(name, []).append(reader)
        self.hb.watch(reader, writer, identity=name)
        buf = self.received.setdefault(name, bytearray())
        while data := await reader.read(4096):
            buf += data
        if self.close_on_eof:
            writer.close()
        else:  # the classic leak: recv() said EOF and nobody closes the socket
            await asyncio.sleep(3600)

    async def __aenter__(self) -> AsyncServer:
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.hb.close()
        self._server.close()
        for writers in self.writers.values():
            for w in writers:
                w.transport.abort()

    async def connect(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"{name}\n".encode())
        await writer.drain()
        for _ in range(100):  # until the server has watched it
            if name in self.writers and self.writers[name][-1] in self.hb:
                break
            await asyncio.sleep(0.01)
        return reader, writer


@pytest.mark.slow
def test_asyncio_server_closes_the_silent_client_within_the_window() -> None:
    timeout, grace = 1.5, 2.0
    closed: list[tuple[str, CloseReason]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hb = AsyncHeartbeats(HeartbeatMonitor(timeout), grace=grace,
                             on_close=lambda w, why: closed.append((str(w), why)))
        async with AsyncServer(hb) as srv:
            alive = [await srv.connect(f"alive{i}") for i in range(2)]
            senders = [send_heartbeats(w, b".", 0.3) for _, w in alive]
            started = loop.time()  # the server adds it after this
            silent_r, silent_w = await srv.connect("silent")
            fin_at = await wait_for_eof(silent_r, timeout + 3)
            elapsed = fin_at - started
            assert timeout <= elapsed <= timeout + hb.monitor.tick + 0.5, elapsed
            assert [why for _, why in closed] == [CloseReason.EXPIRED]
            # Closed with shutdown(SHUT_WR) first: the server still reads what the late
            # client sends during the grace period.
            silent_w.write(b"late but delivered")
            await silent_w.drain()
            assert await await_for(lambda: srv.received["silent"] == b"late but delivered", grace)
            server_side = srv.writers["silent"][0]
            assert not server_side.transport.is_closing()
            # ... and closed after the grace period.
            assert await await_for(server_side.transport.is_closing, grace + 2.0)
            # The others beat all along and stay, for two more timeouts.
            await asyncio.sleep(2 * timeout)
            assert len(hb) == 2 and all(w in hb for w in (srv.writers["alive0"][0],
                                                          srv.writers["alive1"][0]))
            assert all(not r.at_eof() for r, _ in alive)
            assert all(len(srv.received[f"alive{i}"]) >= 10 for i in range(2))
            for task in senders:
                task.cancel()
            for _, w in alive:
                w.close()
            silent_w.close()
            await await_for(lambda: len(hb) == 0, what="closed connections forgotten")
            assert hb.monitor.stats().unknown_beats == 0

    asyncio.run(main())


def test_asyncio_busy_client_sends_no_heartbeats() -> None:
    async def main() -> None:
        hb = AsyncHeartbeats(HeartbeatMonitor(1.0))
        async with AsyncServer(hb) as srv:
            _, w = await srv.connect("busy")
            task = send_heartbeats(w, b"HB", 2.0, jitter=0.1)
            for _ in range(10):  # data every 0.1 s: the line is never quiet for 1.8 s
                w.write(b"d")
                await asyncio.sleep(0.1)
            assert await await_for(lambda: len(srv.received["busy"]) == 10, 5.0)
            assert b"HB" not in srv.received["busy"]
            # Quiet now: a heartbeat comes within the interval.
            assert await await_for(lambda: b"HB" in srv.received["busy"], 5.0)
            task.cancel()
            w.close()

    asyncio.run(main())


def test_asyncio_watch_again_rebinds_and_unwatch_restores_the_reader() -> None:
    async def main() -> None:
        hb = AsyncHeartbeats(HeartbeatMonitor(5.0))
        async with AsyncServer(hb) as srv:
            _, w = await srv.connect("x")
            reader, writer = srv.readers["x"][0], srv.writers["x"][0]
            hooked = reader.feed_data
            assert hb.watch(reader, writer, identity="y") is None
            assert reader.feed_data is hooked  # not wrapped twice
            assert hb.monitor.identity_of(writer) == "y" and hb.monitor.key_for("x") is None
            before = hb.monitor.last_beat(writer)
            w.write(b"data")
            await await_for(lambda: hb.monitor.last_beat(writer) != before,
                            what="a read counted as a beat")
            assert hb.unwatch(writer) and writer not in hb
            assert "feed_data" not in vars(reader)  # the class's own method again
            w.write(b"more")
            await await_for(lambda: srv.received["x"] == b"datamore", what="both writes read")
            assert hb.monitor.stats().unknown_beats == 0
            w.close()

    asyncio.run(main())


@pytest.mark.parametrize("old_leaves", ["silent", "with FIN"])
def test_asyncio_reconnect_drops_the_old_connection_at_once(old_leaves: str) -> None:
    timeout = 3.0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hb = AsyncHeartbeats(HeartbeatMonitor(timeout))
        # A server that never closes on EOF: without identities, CLOSE_WAIT piles up.
        async with AsyncServer(hb, close_on_eof=False) as srv:
            old_r, old_w = await srv.connect("alice")
            old_port = old_w.get_extra_info("sockname")[1]
            if old_leaves == "with FIN":  # the client crashed: its kernel sent FIN
                old_w.close()
                await await_for(lambda: server_side_states(srv.port).get(old_port) == CLOSE_WAIT,
                                what="the server side of the old connection in CLOSE_WAIT")
            started = loop.time()
            _, new_w = await srv.connect("alice")
            # "At once" means well before the monitor's timeout could have closed it.
            if old_leaves == "silent":
                await wait_for_eof(old_r, 0.9 * timeout)  # the old one hears FIN
            else:  # our FIN and the peer's ACK, on loopback
                await await_for(lambda: old_port not in server_side_states(srv.port),
                                0.9 * timeout, "the old connection gone")
            assert loop.time() - started < timeout
            states = server_side_states(srv.port)
            assert CLOSE_WAIT not in states.values(), states
            if old_leaves == "with FIN":
                assert old_port not in states  # LAST_ACK was answered at once: gone
            assert len(hb) == 1 and srv.writers["alice"][1] in hb
            assert srv.writers["alice"][0].transport.is_closing()
            assert hb.monitor.stats().replaced == 1
            new_w.close()
            old_w.close()

    asyncio.run(main())


def test_asyncio_streams_closed_before_watch_or_close_are_released() -> None:
    async def main() -> None:
        hb = AsyncHeartbeats(HeartbeatMonitor(0.3), grace=0.1)
        watched: list[asyncio.StreamWriter] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            while not writer.transport.is_closing():  # the client resets meanwhile
                await asyncio.sleep(0.01)
            hb.watch(reader, writer, identity="x")
            watched.append(writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for _ in range(5):  # hello, then RST: a health check, a crashed client
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"hello\n")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await asyncio.sleep(0.05)
                sock.close()
            for _ in range(300):
                if len(watched) == 5:
                    break
                await asyncio.sleep(0.01)
            assert len(watched) == 5
            assert len(hb) == 0 and hb._readers == {}  # nothing kept of dead streams
            # close() gives every watched reader its own methods back.
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            own_r = asyncio.StreamReader()
            hb.watch(own_r, writer)
            assert "feed_data" in vars(own_r)
            hb.close()
            assert hb._readers == {} and "feed_data" not in vars(own_r)
            writer.close()
        finally:
            hb.close()
            server.close()

    asyncio.run(main())


def test_asyncio_kernel_mode_reschedules_for_sooner_sweeps() -> None:
    # One stream: a sweep in 4 s is planned. Seven more make it one every 0.5 s.
    closed: list[CloseReason] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        kernel: KernelLiveness[asyncio.StreamWriter] = KernelLiveness(
            HeartbeatMonitor(30.0), sweep_interval=4.0, shard_size=1)
        hb = AsyncHeartbeats(kernel, on_close=lambda w, why: closed.append(why))
        async with AsyncServer(hb, close_on_eof=False) as srv:
            clients = [await srv.connect("first")]
            started = loop.time()
            clients += [await srv.connect(f"leaver{i}") for i in range(7)]
            for _, w in clients[1:]:
                w.close()  # CLOSE_WAIT on the server: reaped when its shard is read
            while not closed and loop.time() - started < 8:
                await asyncio.sleep(0.02)
            assert closed == [CloseReason.PEER_CLOSED]
            # The second shard is due about 1 s in; before, the first sweep came at 4 s.
            assert loop.time() - started < 2.5
            clients[0][1].close()

    asyncio.run(main())


# --- real sockets: the thread runner


class ThreadServer:
    """Blocking sockets, one reader thread per connection, beats through HeartbeatThread."""

    def __init__(self, runner: HeartbeatThread[socket.socket], *,
                 close_on_eof: bool = True) -> None:
        self.runner = runner
        self.close_on_eof = close_on_eof
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: dict[str, bytearray] = {}
        self.conns: dict[str, list[socket.socket]] = {}
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb", buffering=0)
        name = f.readline().decode().strip()
        buf = self.received.setdefault(name, bytearray())
        self.runner.add(conn, identity=name)
        self.conns.setdefault(name, []).append(conn)
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            self.runner.beat(conn)
            buf += data
        if self.close_on_eof:
            self.runner.remove(conn)
            conn.close()

    def connect(self, name: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(f"{name}\n".encode())
        for _ in range(100):
            if name in self.conns and self.conns[name][-1] in self.runner:
                break
            time.sleep(0.01)
        return sock

    def close(self) -> None:
        self.listener.close()
        for conns in self.conns.values():
            for c in conns:
                c.close()


def recv_eof_at(sock: socket.socket, limit: float) -> float:
    sock.settimeout(limit)
    while sock.recv(4096):
        pass
    return time.monotonic()


@pytest.mark.slow
def test_thread_runner_closes_the_silent_client_within_the_window() -> None:
    timeout, grace = 1.5, 2.0
    closed: list[CloseReason] = []
    runner: HeartbeatThread[socket.socket] = HeartbeatThread(
        HeartbeatMonitor(timeout), grace=grace, on_close=lambda s, why: closed.append(why))
    with runner:
        srv = ThreadServer(runner)
        try:
            alive = [HeartbeatSenderThread(srv.connect(f"alive{i}"), b".", 0.3).start()
                     for i in range(2)]
            started = time.monotonic()  # the server adds it after this
            silent = srv.connect("silent")
            elapsed = recv_eof_at(silent, timeout + 3) - started
            assert timeout <= elapsed <= timeout + runner.monitor.tick + 0.5, elapsed
            assert wait_for(lambda: closed, 2.0)  # right after the shutdown the client just saw
            assert closed == [CloseReason.EXPIRED]
            silent.sendall(b"late but delivered")  # still read during the grace period
            assert wait_for(lambda: srv.received["silent"] == b"late but delivered", grace)
            server_side = srv.conns["silent"][0]
            assert server_side.fileno() != -1
            assert wait_for(lambda: server_side.fileno() == -1, grace + 2.0)  # after the grace
            time.sleep(2 * timeout)
            assert len(runner) == 2
            assert all(s.error is None for s in alive)
            assert all(len(srv.received[f"alive{i}"]) >= 10 for i in range(2))
            for s in alive:
                s.stop()
                s.sock.close()
            silent.close()
        finally:
            srv.close()
    assert runner.errors == []


@pytest.mark.parametrize("old_leaves", ["silent", "with FIN"])
def test_thread_runner_reconnect_drops_the_old_connection_at_once(old_leaves: str) -> None:
    timeout = 3.0
    runner: HeartbeatThread[socket.socket] = HeartbeatThread(HeartbeatMonitor(timeout))
    with runner:
        srv = ThreadServer(runner, close_on_eof=False)
        try:
            old = srv.connect("alice")
            old_port = old.getsockname()[1]
            if old_leaves == "with FIN":
                old.close()
                wait_for(lambda: server_side_states(srv.port).get(old_port) == CLOSE_WAIT,
                         what="the server side of the old connection in CLOSE_WAIT")
            started = time.monotonic()
            new = srv.connect("alice")
            # "At once" means well before the monitor's timeout could have closed it.
            if old_leaves == "silent":
                recv_eof_at(old, 0.9 * timeout)  # the old one hears FIN
            else:  # our FIN and the peer's ACK, on loopback
                wait_for(lambda: old_port not in server_side_states(srv.port), 0.9 * timeout,
                         "the old connection gone")
            assert time.monotonic() - started < timeout
            states = server_side_states(srv.port)
            assert CLOSE_WAIT not in states.values(), states
            if old_leaves == "with FIN":
                assert old_port not in states
            assert len(runner) == 1 and srv.conns["alice"][0].fileno() == -1
            new.close()
            old.close()
        finally:
            srv.close()


# --- kernel-assisted liveness


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def test_thread_runner_closes_the_socket_given_for_a_key() -> None:
    closed: list[tuple[str, CloseReason]] = []
    kernel: KernelLiveness[str] = KernelLiveness(HeartbeatMonitor(30.0), sweep_interval=0.2)
    runner: HeartbeatThread[str] = HeartbeatThread(
        kernel, on_close=lambda k, why: closed.append((k, why)))
    client, server = loopback_pair()
    with runner, client, server:
        runner.add("conn-1", sock=server)
        client.close()  # CLOSE_WAIT: reaped at the next sweep
        assert wait_for(lambda: closed, 5.0)
        assert closed == [("conn-1", CloseReason.PEER_CLOSED)]
        assert server.fileno() == -1 and "conn-1" not in runner and runner._socks == {}
    assert runner.errors == []
    # Plain monitor, expired with a grace period: the socket is the one shut down and closed.
    runner = HeartbeatThread(HeartbeatMonitor(0.3), grace=0.1,
                             on_close=lambda k, why: closed.append((k, why)))
    client, server = loopback_pair()
    with runner, client, server:
        runner.add("conn-2", sock=server)
        assert wait_for(lambda: server.fileno() == -1, 5.0)
        assert closed[-1] == ("conn-2", CloseReason.EXPIRED) and client.recv(1) == b""
    assert runner.errors == []


def test_thread_runner_wakes_for_a_new_key_due_before_its_planned_wake() -> None:
    # The thread sleeps until the first key's grace period ends, 5 s away; a key added
    # meanwhile is due long before that.
    expired: list[tuple[socket.socket, float]] = []
    runner: HeartbeatThread[socket.socket] = HeartbeatThread(
        HeartbeatMonitor(0.5), grace=5.0,
        on_close=lambda s, why: expired.append((s, time.monotonic())))
    (c1, s1), (c2, s2) = loopback_pair(), loopback_pair()
    with runner, c1, s1, c2, s2:
        runner.add(s1)
        assert wait_for(lambda: expired, 3.0)
        added = time.monotonic()
        runner.add(s2)
        assert wait_for(lambda: len(expired) == 2, 4.0), "the runner slept through the deadline"
        assert expired[1][0] is s2 and expired[1][1] - added < 2.0


def test_thread_runner_kernel_mode_wakes_for_sooner_sweeps() -> None:
    # One socket: a sweep in 4 s is planned. Seven more make it one every 0.5 s.
    reaped: list[CloseReason] = []
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0), sweep_interval=4.0, shard_size=1)
    runner: HeartbeatThread[socket.socket] = HeartbeatThread(
        kernel, on_close=lambda s, why: reaped.append(why))
    pairs = [loopback_pair() for _ in range(8)]
    try:
        with runner:
            runner.add(pairs[0][1])
            assert wait_for(lambda: runner._wake_at is not None, 2.0)  # asleep until the sweep
            added = time.monotonic()
            for client, server in pairs[1:]:
                client.close()  # CLOSE_WAIT: reaped as soon as its shard is read
                runner.add(server)
            assert wait_for(lambda: reaped, 8.0)
            # The second shard is due about 1 s in; before, the first sweep came at 4 s.
            assert time.monotonic() - added < 2.5
            assert reaped == [CloseReason.PEER_CLOSED]
    finally:
        for c, s in pairs:
            c.close()
            s.close()


def test_thread_runner_survives_a_socket_closed_behind_its_back() -> None:
    closed: list[socket.socket] = []

    def on_close(sock: socket.socket, why: CloseReason) -> None:
        closed.append(sock)
        if sock is s1:  # its fd goes away during the grace period: close() will fail
            os.close(sock.fileno())

    runner: HeartbeatThread[socket.socket] = HeartbeatThread(
        HeartbeatMonitor(0.3), grace=0.2, on_close=on_close)
    (c1, s1), (c2, s2) = loopback_pair(), loopback_pair()
    with runner, c1, c2, s2:
        runner.add(s1)
        assert wait_for(lambda: closed, 3.0)
        runner.add(s2)  # after s1's fd was closed, so no new fd can take its number
        assert wait_for(lambda: s2.fileno() == -1, 5.0), "the runner thread died"
        assert any(isinstance(e, OSError) and e.errno == errno.EBADF for e in runner.errors)
        assert s1.fileno() == -1


def test_thread_runner_can_be_stopped_from_on_close() -> None:
    runner: HeartbeatThread[socket.socket] = HeartbeatThread(
        HeartbeatMonitor(0.3), grace=5.0, on_close=lambda s, why: runner.stop())
    client, server = loopback_pair()
    with client, server:
        runner.start()
        runner.add(server)
        assert wait_for(lambda: not runner._thread.is_alive(), 5.0)
        assert server.fileno() == -1  # its grace period ended with the runner
    assert runner.errors == []


@pytest.mark.slow
def test_sender_thread_never_blocks_on_a_full_send_buffer() -> None:
    client, server = loopback_pair()  # the server never reads: a peer gone quiet
    with client, server:
        client.setblocking(False)
        # One byte at a time: tiny segments fill the peer's receive buffer for good (zero
        # window), as a stalled peer's would; big ones would be let through by autotuning.
        with contextlib.suppress(BlockingIOError):
            for _ in range(10_000_000):
                client.send(b"x")
        client.setblocking(True)
        sender = HeartbeatSenderThread(client, b"\n", 0.05, jitter=0).start()
        started = sender.sender.next_due()
        # A heartbeat fell due and found the buffer full: queued data counts as a write.
        assert wait_for(lambda: sender.sender.next_due() > started + 0.1, 5.0)
        stopper = threading.Thread(target=sender.stop, daemon=True)
        stopper.start()
        stopper.join(5.0)
        assert not stopper.is_alive() and not sender._thread.is_alive()
        assert sender.error is None


@pytest.mark.parametrize("seconds,count", [(3, 1), (8, 3), (30, 3), (7200, 9)])
def test_one_budget_sets_keepalive_user_timeout_and_heartbeat_timeout(seconds: float,
                                                                      count: int) -> None:
    plan = LivenessPlan.for_detection(seconds, count=count)
    ka = plan.keepalive
    assert plan.timeout + plan.tick == pytest.approx(seconds)  # the monitor's window
    assert ka.count == count and ka.detection_time <= plan.timeout  # the kernel's, inside it
    # One derivation, one worst case: keepalive's, for every write pattern, is the budget's.
    assert ka == KeepaliveConfig.for_detection(seconds, count=count) and ka.probes == count
    assert ka.worst_case_detection is not None
    assert seconds - 1 < ka.worst_case_detection <= plan.budget
    # An idle live peer answers a probe every `idle` s (a little later: kernel timer slack);
    # one sweep interval to read it, one of margin against loop lag.
    assert ka.idle * (1 + KEEPALIVE_SLACK) + 2 * plan.sweep_interval == pytest.approx(
        plan.timeout)
    assert plan.sweep_interval > 0
    m = plan.monitor()
    assert m.detection_window == pytest.approx((plan.timeout, seconds))


def test_budget_too_small_for_the_probes_is_a_value_error() -> None:
    with pytest.raises(InvalidConfigError):
        LivenessPlan.for_detection(3, count=3)


def test_sweep_reaps_close_wait_and_closed_descriptors_at_once() -> None:
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0), sweep_interval=1.0, keepalive=KeepaliveConfig(10, 5, 3))
    pairs = [loopback_pair() for _ in range(3)]
    try:
        for _, server in pairs:
            kernel.add(server)
            assert read_keepalive(server).idle == 10  # the plan's keepalive is on
        pairs[0][0].close()  # the peer closed; our application did not
        pairs[1][1].close()  # our descriptor closed behind the monitor's back
        wait_for(lambda: tcp_info(pairs[0][1]).state == TcpState.CLOSE_WAIT)
        result = kernel.sweep()
        assert result.swept == 3
        assert dict(result.reaped) == {pairs[0][1]: CloseReason.PEER_CLOSED,
                                       pairs[1][1]: CloseReason.GONE}
        assert list(kernel.monitor.keys()) == [pairs[2][1]]
        assert kernel.sweep().reaped == ()
    finally:
        for c, s in pairs:
            c.close()
            s.close()


def test_kernel_mode_takes_only_sockets() -> None:
    kernel: KernelLiveness[object] = KernelLiveness(HeartbeatMonitor(30.0), sweep_interval=1.0)
    with pytest.raises(TypeError):
        kernel.add("not a socket")
    with pytest.raises(TypeError):
        kernel.add("key", 1.5)
    assert len(kernel.monitor) == 0


def test_close_wait_can_be_left_for_half_close_protocols() -> None:
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0), sweep_interval=1.0, reap_close_wait=False)
    client, server = loopback_pair()
    with client, server:
        kernel.add(server)
        client.shutdown(socket.SHUT_WR)
        wait_for(lambda: tcp_info(server).state == TcpState.CLOSE_WAIT)
        assert kernel.sweep().reaped == () and server in kernel.monitor


def test_sweeps_are_sharded_round_robin() -> None:
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0), sweep_interval=2.0, shard_size=8)
    pairs = [loopback_pair() for _ in range(30)]
    try:
        for _, server in pairs:
            kernel.add(server)
        first = kernel.next_sweep()
        assert first is not None
        assert first - kernel.monitor.clock() <= 2.0 / 4 + 0.01  # 4 shards per round
        swept = [kernel.sweep().swept for _ in range(4)]
        assert max(swept) == 8 and sum(swept) == 30  # no call reads more than a shard
        kernel.remove(pairs[0][1])
        pairs[1][1].close()
        for client, _ in pairs[2:]:
            client.close()  # 28 peers leave: CLOSE_WAIT everywhere
        wait_for(lambda: all(tcp_info(s).state == TcpState.CLOSE_WAIT
                             for _, s in pairs[2:]))
        reaped = [kernel.sweep().reaped for _ in range(4)]
        assert sum(len(r) for r in reaped) == 29  # one round reaps all 29
        assert max(len(r) for r in reaped) <= 8
        reasons = [why for r in reaped for _, why in r]
        assert reasons.count(CloseReason.GONE) == 1
        assert reasons.count(CloseReason.PEER_CLOSED) == 28
        assert len(kernel.monitor) == 0 and kernel.next_sweep() is None
    finally:
        for c, s in pairs:
            c.close()
            s.close()


def test_a_round_keeps_its_pace_as_keys_are_reaped() -> None:
    clock = FakeClock(1000.0)
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0, clock=clock), sweep_interval=2.0, shard_size=1)
    pairs = [loopback_pair() for _ in range(8)]
    try:
        for client, server in pairs:
            kernel.add(server)
            client.close()
        wait_for(lambda: all(tcp_info(s).state == TcpState.CLOSE_WAIT for _, s in pairs))
        reaped = 0
        for _ in range(8):  # every shard a quarter second apart, reaped ones or not
            due = kernel.next_sweep()
            assert due is not None and due == pytest.approx(clock.now + 0.25)
            clock.now = due
            reaped += len(kernel.sweep().reaped)
        assert reaped == 8 and clock.now == pytest.approx(1002.0)
        assert kernel.next_sweep() is None and kernel.suspects == ()
    finally:
        for c, s in pairs:
            c.close()
            s.close()


def test_keepalive_replies_count_as_life() -> None:
    # No data at all: the only thing from the peer is its kernel's ACK to our probes.
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0), sweep_interval=1.0, keepalive=KeepaliveConfig(1, 1, 3))
    client, server = loopback_pair()
    with client, server:
        kernel.add(server)
        added = kernel.monitor.last_beat(server)
        assert added is not None
        def probed() -> bool:  # the keepalive probe's reply, about 1 s in, read by a sweep
            kernel.sweep()
            last = kernel.monitor.last_beat(server)
            return last is not None and last >= added + 0.9

        wait_for(probed, 5.0, "the keepalive reply seen as life")
        data_recv = tcp_info(server).last_data_recv
        # No data came since before the add, so what moved the beat was the probe's ACK.
        assert data_recv is not None and data_recv >= 900


@pytest.mark.slow
def test_kernel_mode_finds_a_vanished_peer_without_pings(netns_pair: NetnsPair) -> None:
    """The peer's link goes down (no FIN, no RST); an idle live peer next to it stays."""
    kernel: KernelLiveness[socket.socket] = KernelLiveness.for_detection(3, count=1)
    budget = 3.0
    alive_client, alive = loopback_pair()
    with netns_pair.connected() as (_, vanishing), alive_client, alive:
        kernel.add(vanishing)
        kernel.add(alive)
        netns_pair.link_down("a")
        started = time.monotonic()
        reaped: dict[socket.socket, CloseReason] = {}
        suspected: set[socket.socket] = set()
        found_at = None
        while time.monotonic() - started < 2 * budget:  # sweep 4x a second, like a runner
            result = kernel.sweep()
            suspected.update(result.suspects)
            reaped.update(result.reaped)
            reaped.update((k, CloseReason.EXPIRED) for k in kernel.monitor.expired())
            if vanishing in reaped and found_at is None:
                found_at = time.monotonic() - started
            time.sleep(0.25)
        assert found_at is not None and found_at <= budget + 0.5, found_at
        assert reaped[vanishing] in (CloseReason.DEAD, CloseReason.EXPIRED)
        assert vanishing in suspected  # its keepalive probe went unanswered first
        assert alive not in reaped and alive in kernel.monitor  # idle, but its kernel ACKs
        assert alive not in kernel.suspects


def test_suspects_are_read_on_top_of_a_full_shard(netns_pair: NetnsPair) -> None:
    clock = FakeClock(1000.0)  # the sweeps' pace is not under test: no key expires early
    kernel: KernelLiveness[socket.socket] = KernelLiveness(
        HeartbeatMonitor(30.0, clock=clock), sweep_interval=2.0, shard_size=2)
    pairs = [loopback_pair() for _ in range(4)]
    try:
        with netns_pair.connected() as (_, vanishing):
            kernel.add(vanishing)
            for _, server in pairs:
                kernel.add(server)
            netns_pair.link_down("a")
            vanishing.send(b"unacknowledged")  # retransmitted into the void
            for _ in range(100):
                kernel.sweep()
                if vanishing in kernel.suspects:
                    break
                time.sleep(0.05)
            assert kernel.suspects == (vanishing,)
            # Each sweep reads the suspect and two round positions (the suspect's own is not
            # read twice): three sweeps cover the round of 5, so all 4 others are read.
            read = [kernel.sweep().swept for _ in range(3)]
            assert sum(read) - 3 >= 4, read
            # Once the monitor expired it, it is no suspect any more.
            clock.advance(60)
            assert vanishing in kernel.monitor.expired()
            assert not kernel.suspects
    finally:
        for c, s in pairs:
            c.close()
            s.close()


def test_thread_runner_kernel_mode_closes_the_vanished_peer(netns_pair: NetnsPair) -> None:
    closed: list[tuple[socket.socket, CloseReason, float]] = []
    runner: HeartbeatThread[socket.socket] = HeartbeatThread(
        KernelLiveness.for_detection(3, count=1),
        on_close=lambda s, why: closed.append((s, why, time.monotonic())))
    alive_client, alive = loopback_pair()
    with runner, netns_pair.connected() as (_, vanishing), alive_client, alive:
        runner.add(vanishing)
        runner.add(alive)
        netns_pair.link_down("a")
        started = time.monotonic()
        time.sleep(4.5)
        assert [(s, why) for s, why, _ in closed] in (
            [(vanishing, CloseReason.DEAD)], [(vanishing, CloseReason.EXPIRED)])
        assert closed[0][2] - started <= 3.5
        assert vanishing.fileno() == -1  # closed at once (the kernel had given up)
        assert alive in runner and alive.fileno() != -1
    assert runner.errors == []


@pytest.mark.slow
def test_asyncio_kernel_mode_reaps_close_wait_and_keeps_idle_peers() -> None:
    closed: list[tuple[asyncio.StreamWriter, CloseReason]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hb = AsyncHeartbeats.for_detection(3, count=1, on_close=lambda w, why:
                                           closed.append((w, why)))
        assert hb.kernel is not None
        async with AsyncServer(hb, close_on_eof=False) as srv:
            idle_client = await srv.connect("idle")  # then nothing at all: no heartbeats
            _, leaver = await srv.connect("leaver")
            leaver_port = leaver.get_extra_info("sockname")[1]
            server_idle = srv.writers["idle"][0]
            ka = read_keepalive(server_idle.get_extra_info("socket"))
            assert (ka.enabled, ka.idle, ka.user_timeout_ms) == (True, 1, 1000)
            leaver.close()  # FIN; the server application never closes: CLOSE_WAIT
            started = loop.time()
            while not closed and loop.time() - started < 3:
                await asyncio.sleep(0.05)
            assert loop.time() - started <= hb.kernel.sweep_interval + 0.5 < 3
            assert [(w, why) for w, why in closed] == [
                (srv.writers["leaver"][0], CloseReason.PEER_CLOSED)]
            await await_for(lambda: CLOSE_WAIT not in server_side_states(srv.port).values()
                            and leaver_port not in server_side_states(srv.port),
                            what="the reaped CLOSE_WAIT gone")
            await asyncio.sleep(4.0)  # longer than the whole budget
            assert len(closed) == 1 and server_idle in hb  # idle, but its kernel ACKs
            idle_client[1].close()

    asyncio.run(main())


# --- the docs


DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "heartbeat.md"


def test_doc_examples_compile_and_import_real_names() -> None:
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 6
    for block in blocks:
        tree = compile(block, "docs/heartbeat.md", "exec",
                       flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        for node in ast.walk(tree):
            if (isinstance(node, ast.ImportFrom) and node.module is not None
                    and node.module.startswith("pysockopt")):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), (node.module, alias.name)


def test_doc_reference_table_matches_the_signatures() -> None:
    import pysockopt
    import pysockopt.aio

    text = DOC.read_text().split("## Reference", 1)[1]
    rows = re.findall(r"^\| `([\w.]+)\(([^`]*)\)`", text, re.M)
    assert len(rows) >= 8
    for dotted, params in rows:
        obj: object = pysockopt
        for part in dotted.split(".")[1 if dotted.startswith("pysockopt.") else 0:]:
            obj = getattr(obj, part)
        assert callable(obj)
        real = inspect.signature(obj).parameters
        for param in params.split(","):
            name = param.split("=")[0].strip()
            if name and name != "*":
                assert name in real, (dotted, name)


# --- beat_at with a time that is not a number


def test_beat_at_refuses_nan_and_non_numbers() -> None:
    now = [100.0]
    m: HeartbeatMonitor[str] = HeartbeatMonitor(10, clock=lambda: now[0])
    m.add("k")
    with pytest.raises(ValueError, match="NaN"):
        m.beat_at("k", math.nan)
    with pytest.raises(TypeError):
        m.beat_at("k", "soon")  # type: ignore[arg-type]  # not a number, on purpose
    assert m.last_beat("k") == 100.0  # nothing changed
    now[0] = 111.0
    assert m.expired() == ["k"]  # and it still expires on time
    m.add("j")
    now[0] = 112.0
    assert m.beat_at("j", math.inf)  # the future counts as now
    assert m.last_beat("j") == 112.0


def test_beat_many_at_counts_the_future_as_now_and_skips_non_numbers() -> None:
    now = [0.0]
    m: HeartbeatMonitor[str] = HeartbeatMonitor(5, clock=lambda: now[0])
    for key in "abcd":
        m.add(key)
    now[0] = 1.0
    m.beat_many_at([("a", math.inf), ("b", math.nan), ("c", 1000.0), ("nobody", 0.5)])
    assert m.last_beat("a") == 1.0 and m.last_beat("c") == 1.0  # never past now
    assert m.last_beat("b") == 0.0 and m.stats().unknown_beats == 0
    now[0] = 20.0
    assert sorted(m.expired()) == ["a", "b", "c", "d"] and len(m) == 0


def test_huge_numbers_are_config_errors_not_overflows() -> None:
    from pysockopt import InvalidConfigError

    with pytest.raises(InvalidConfigError):
        HeartbeatMonitor(10**400)


def test_close_now_closes_a_socket_like_object_that_has_a_transport_attribute() -> None:
    from pysockopt.heartbeat import close_now

    a, b = socket.socketpair()

    class Channel:  # e.g. an SSH channel: a socket API with a .transport of its own
        transport = object()

        def shutdown(self, how: int) -> None:
            a.shutdown(how)

        def close(self) -> None:
            a.close()

    close_now(Channel())
    assert a.fileno() == -1 and b.recv(1) == b""
    b.close()
