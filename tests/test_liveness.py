"""Kernel-assisted liveness under churn: sweep cadence, the plan's slack, live peers kept.

A live idle peer shows life only through its kernel's replies to keepalive probes, one every
``keepalive.idle`` seconds (a little later: kernel timer slack). Some sweep must read its
socket between a reply and the monitor's timeout, so how long a socket can wait between two
reads is what keeps such peers alive: it must stay bounded whatever comes and goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import socket
import time
from collections.abc import Hashable, Iterable, Iterator

import pytest

from pysockopt import (
    CloseReason,
    HeartbeatMonitor,
    InvalidConfigError,
    KernelLiveness,
    LivenessPlan,
    Sweep,
)
from pysockopt.aio import AsyncHeartbeats


class FakeClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class ReadLog(HeartbeatMonitor[Hashable]):
    """A monitor that notes when each key's TCP_INFO was read (a sweep reports it here)."""

    def __init__(self, timeout: float, clock: FakeClock) -> None:
        super().__init__(timeout, clock=clock)
        self.reads: dict[Hashable, list[float]] = {}

    def beat_many_at(self, beats: Iterable[tuple[Hashable, float]]) -> None:
        beats = list(beats)
        now = self.clock()
        for key, _ in beats:
            self.reads.setdefault(key, []).append(now)
        super().beat_many_at(beats)


def socket_pairs(n: int) -> Iterator[list[socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=n)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            socks += [server, client]
        yield socks
    finally:
        listener.close()
        for s in socks:
            s.close()


@pytest.fixture
def sockets_600() -> Iterator[list[socket.socket]]:
    yield from socket_pairs(300)


@pytest.mark.parametrize("shard_size", [8, 64, 128, 256, 1024])
@pytest.mark.parametrize("seed", [3, 11])
def test_read_gap_stays_within_a_sweep_interval_through_bursts(
        sockets_600: list[socket.socket], shard_size: int, seed: int) -> None:
    """Bursts of disconnects and reconnects never push a stable socket's next read later."""
    clock = FakeClock(1000.0)
    sweep_interval = 2.0
    monitor = ReadLog(1e6, clock)  # nothing expires: the sweeps' order is under test
    kernel: KernelLiveness[Hashable] = KernelLiveness(
        monitor, sweep_interval=sweep_interval, shard_size=shard_size)
    rnd = random.Random(seed)
    stable = sockets_600[:120]
    churny = sockets_600[120:]
    for s in stable:
        kernel.add(s)
    live = churny[: len(churny) * 4 // 5]
    spare = churny[len(live):]
    target = len(live)
    for s in live:
        kernel.add(s)
    most = len(stable) + len(live)
    for step in range(1200):
        due = kernel.next_sweep()
        assert due is not None
        clock.now = max(clock.now, due)
        kernel.sweep()
        if step % 40 == 20:  # a burst of disconnects ...
            rnd.shuffle(live)
            gone, live = live[: len(live) * 4 // 5], live[len(live) * 4 // 5:]
            for s in gone:
                kernel.remove(s)
            spare += gone
        elif step % 40 == 30:  # ... and the reconnects
            rnd.shuffle(spare)
            back, spare = spare[: target - len(live)], spare[target - len(live):]
            for s in back:
                kernel.add(s)
            live += back
        elif step % 7 == 0 and spare:  # and steady churn in between
            out = live.pop(rnd.randrange(len(live)))
            kernel.remove(out)
            inn = spare.pop(rnd.randrange(len(spare)))
            kernel.add(inn)
            live.append(inn)
            spare.append(out)
    elapsed = clock.now - 1000.0
    assert elapsed > 10 * sweep_interval  # rounds end: churn does not make sweeps spin
    share = sweep_interval / math.ceil(most / shard_size)  # one shard's step in a round
    gaps = [b - a for s in stable
            for a, b in zip(monitor.reads[s], monitor.reads[s][1:], strict=False)]
    assert all(len(monitor.reads[s]) >= elapsed / sweep_interval - 2 for s in stable)
    assert max(gaps) <= sweep_interval + share + 1e-9, (max(gaps), sweep_interval, share)


def test_a_new_or_returning_socket_is_read_within_a_sweep_interval(
        sockets_600: list[socket.socket]) -> None:
    clock = FakeClock(1000.0)
    monitor = ReadLog(1e6, clock)
    kernel: KernelLiveness[Hashable] = KernelLiveness(monitor, sweep_interval=2.0,
                                                      shard_size=16)
    for s in sockets_600[:200]:
        kernel.add(s)
    added: dict[Hashable, float] = {}
    for step in range(400):
        due = kernel.next_sweep()
        assert due is not None
        clock.now = max(clock.now, due)
        kernel.sweep()
        if step % 10 == 0:  # some leave, and come back a little later
            for s in sockets_600[step % 200: step % 200 + 20]:
                kernel.remove(s)
        if step % 10 == 5:
            for s in sockets_600[(step - 5) % 200: (step - 5) % 200 + 20]:
                kernel.add(s)
                added[s] = clock.now
                monitor.reads.pop(s, None)
        for key, at in list(added.items()):
            if monitor.reads.get(key):
                assert monitor.reads[key][0] - at <= 2.0 + 1e-9
                del added[key]
            else:
                assert clock.now - at <= 2.0 + 1e-9  # not read yet, but not overdue either


# --- the plan's slack


#: The kernel's timer wheel fires a timer ``d`` away at most 8/63 of ``d`` late (a level's
#: granularity over the smallest delay filed at that level); a probe reply also needs its
#: round trip. The plan must leave this, one sweep interval, and loop lag inside its timeout.
WHEEL_SLACK = 8 / 63


@pytest.mark.parametrize("seconds,count", [(3, 1), (4.5, 1), (7.5, 3), (8, 3), (30, 3),
                                           (300, 5), (7200, 9)])
def test_the_plan_leaves_room_for_timer_slack_and_loop_lag(seconds: float, count: int) -> None:
    plan = LivenessPlan.for_detection(seconds, count=count)
    idle = plan.keepalive.idle
    # A live idle peer: its kernel's next reply comes at most this long after the last one.
    reply_gap = idle * (1 + WHEEL_SLACK)
    # Read at most one sweep interval after that (the sweep order's bound), plus loop lag:
    # the lag a live peer survives must be a whole sweep interval at least.
    lag_margin = plan.timeout - reply_gap - plan.sweep_interval
    assert lag_margin >= plan.sweep_interval > 0, (plan, lag_margin)


@pytest.mark.parametrize("count", [1, 3, 9])
def test_a_budget_too_small_says_what_to_pass(count: int) -> None:
    seconds = count + 1  # whole seconds enough for the kernel, but not once the tick is out
    with pytest.raises(InvalidConfigError) as caught:
        LivenessPlan.for_detection(seconds, count=count)
    err = caught.value
    assert err.field == "seconds" and err.value == seconds  # the user's value, not ours
    message = str(err)
    found = re.search(r"at least ([0-9.]+) s", message)
    assert found, message
    assert f"count={count}" in message
    least = float(found.group(1))
    LivenessPlan.for_detection(least, count=count)  # what it says works ...
    with pytest.raises(InvalidConfigError):  # ... and is the least, to 0.01 s
        LivenessPlan.for_detection(least - 0.01, count=count)


def test_a_budget_too_large_says_what_to_pass() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        LivenessPlan.for_detection(10**6, count=3)
    message = str(caught.value)
    found = re.search(r"at most ([0-9.]+) s", message)
    assert found, message
    most = float(found.group(1))
    LivenessPlan.for_detection(most, count=3)
    with pytest.raises(InvalidConfigError):
        LivenessPlan.for_detection(most + 0.01, count=3)


def test_other_bad_plan_values_keep_their_own_errors() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        LivenessPlan.for_detection(30, count=0)
    assert caught.value.field == "count"
    with pytest.raises(InvalidConfigError):
        LivenessPlan.for_detection(math.inf)
    with pytest.raises(TypeError):
        LivenessPlan.for_detection("30")  # type: ignore[arg-type]


# --- a late caller: the kernel is asked before anyone is declared dead


def test_expired_reads_overdue_slots_before_the_monitor_decides(
        sockets_600: list[socket.socket]) -> None:
    clock = FakeClock(1000.0)
    kernel: KernelLiveness[Hashable] = KernelLiveness(
        HeartbeatMonitor(3.0, clock=clock), sweep_interval=1.0, shard_size=2)
    servers = sockets_600[:40:2]  # 20 connected sockets in 10 slots; their peers are here
    for s in servers:
        kernel.add(s)
    for _ in range(10):
        clock.now = max(clock.now, kernel.next_sweep() or clock.now)
        kernel.sweep()
    clock.now += 30.0  # the caller stalled for ten timeouts; the kernel saw the peers ACK
    assert kernel.expired() == []  # every overdue slot was read first
    assert all(s in kernel.monitor for s in servers)
    due = kernel.next_sweep()
    assert due is not None and clock.now < due <= clock.now + 1.0  # caught up, on its grid
    assert kernel.sweep_due() == []  # nothing more is due now
    servers[0].close()  # and what the kernel says is dead or gone still goes
    clock.now += 30.0
    assert kernel.expired() == [(servers[0], CloseReason.GONE)]


@pytest.mark.slow
def test_asyncio_kernel_mode_keeps_idle_live_peers_through_a_stalled_loop() -> None:
    """A callback blocks the loop longer than the timeout; idle live peers stay."""
    closed: list[tuple[asyncio.StreamWriter, CloseReason]] = []

    async def main() -> None:
        hb = AsyncHeartbeats.for_detection(3, count=1, shard_size=1,
                                           on_close=lambda w, why: closed.append((w, why)))
        assert hb.kernel is not None
        watched: list[asyncio.StreamWriter] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            hb.watch(reader, writer)
            watched.append(writer)
            with contextlib.suppress(ConnectionError):
                while await reader.read(4096):
                    pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(12)]
        try:
            while len(watched) < 12:
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.5)  # sweeps and keepalive replies going on
            time.sleep(hb.monitor.timeout + 1.0)  # a callback that blocks the whole loop
            await asyncio.sleep(0.5)  # the overdue timers run
            assert closed == []
            assert all(w in hb for w in watched)
            assert hb.errors == []
        finally:
            hb.close()
            server.close()
            for _, w in clients:
                w.close()
            for w in watched:
                w.transport.abort()

    asyncio.run(main())


# --- real churn, real kernel timers


class RealReadLog(HeartbeatMonitor[Hashable]):
    """ReadLog on the real clock: when each key's TCP_INFO was read."""

    def __init__(self, timeout: float, tick: float) -> None:
        super().__init__(timeout, tick=tick)
        self.reads: dict[Hashable, list[float]] = {}

    def beat_many_at(self, beats: Iterable[tuple[Hashable, float]]) -> None:
        beats = list(beats)
        now = self.clock()
        for key, _ in beats:
            self.reads.setdefault(key, []).append(now)
        super().beat_many_at(beats)


class LateSweeps(KernelLiveness[Hashable]):
    """A KernelLiveness that notes how late after its due time each sweep ran."""

    late = 0.0

    def sweep(self) -> Sweep[Hashable]:
        due = self.next_sweep()
        if due is not None:
            self.late = max(self.late, self.monitor.clock() - due)
        return super().sweep()


@pytest.mark.slow
def test_asyncio_kernel_mode_keeps_idle_live_peers_through_churn_bursts() -> None:
    """Idle clients (no data at all) stay while others come and go in bursts."""
    n_stable, n_churny, seconds, shard_size = 150, 250, 8.0, 16
    closed: list[tuple[asyncio.StreamWriter, CloseReason]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # AsyncHeartbeats.for_detection(3, count=1, shard_size=16), with a monitor that
        # notes the reads. Small shards: a round takes many sweeps, so its order matters.
        plan = LivenessPlan.for_detection(3, count=1)
        monitor = RealReadLog(plan.timeout, plan.tick)
        kernel = LateSweeps(monitor, sweep_interval=plan.sweep_interval,
                            keepalive=plan.keepalive, shard_size=shard_size)
        hb = AsyncHeartbeats(kernel, on_close=lambda w, why: closed.append((w, why)))  # type: ignore[arg-type]
        server_side: dict[str, asyncio.StreamWriter] = {}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            name = (await reader.readline()).decode().strip()
            server_side[name] = writer
            hb.watch(reader, writer, identity=name)
            with contextlib.suppress(ConnectionError):
                while await reader.read(4096):
                    pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]

        async def connect(name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"{name}\n".encode())
            await writer.drain()
            return reader, writer

        stable = {f"stable{i}": await connect(f"stable{i}") for i in range(n_stable)}
        churny = {f"churny{i}": await connect(f"churny{i}") for i in range(n_churny)}
        gone: list[str] = []
        rnd = random.Random(5)
        started = loop.time()
        burst = 0
        try:
            while loop.time() - started < seconds:
                await asyncio.sleep(0.01)
                burst += 1
                if burst % 80 == 20:  # most churny clients leave at once ...
                    names = rnd.sample(sorted(churny), len(churny) * 4 // 5)
                    for name in names:
                        churny.pop(name)[1].close()
                    gone += names
                elif burst % 80 == 60:  # ... and come back together
                    for name in gone:
                        churny[name] = await connect(name)
                    gone = []
                elif burst % 10 == 0:  # and a few come and go all the time
                    for name in rnd.sample(sorted(churny), 3):
                        churny.pop(name)[1].close()
                        churny[name] = await connect(name)
            stable_writers = {server_side[name] for name in stable}
            live_closed = [(w, why) for w, why in closed if w in stable_writers]
            assert live_closed == [], f"{len(live_closed)} idle live peers closed"
            assert all(not r.at_eof() for r, _ in stable.values())
            assert all(w in hb for w in stable_writers)
            assert hb.errors == []
            # Each stable socket was read at least once per sweep interval (and a shard's
            # step), give or take how late the loop ran the sweeps, through all the bursts.
            step = plan.sweep_interval / math.ceil((n_stable + n_churny) / shard_size)
            gaps = [b - a for w in stable_writers
                    for a, b in zip(monitor.reads[w], monitor.reads[w][1:], strict=False)]
            assert len(gaps) >= n_stable * (seconds / plan.sweep_interval - 2)
            late = kernel.late
            assert max(gaps) <= plan.sweep_interval + step + late, (max(gaps), late)
        finally:
            hb.close()
            server.close()
            for _, w in [*stable.values(), *churny.values()]:
                w.close()
            for w in server_side.values():
                w.transport.abort()

    asyncio.run(main())
