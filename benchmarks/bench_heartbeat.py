"""HeartbeatMonitor with 100k tracked connections, and the kernel-assisted sweep per socket.

Targets (design.md): beat <= 0.4 us and expired() <= 1 ms with 100k tracked and none
expiring; memory per tracked connection <= 200 bytes. These are absolute figures: beat is
shown next to a plain dict store and expired() next to a full scan for scale.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable

from pysockopt import HeartbeatMonitor, KeepaliveConfig, KernelLiveness, poll_tcp_info

from ._harness import compare, report
from .bench_tcpinfo import _pairs

N = 100_000
TIMEOUT = 30.0
N_SOCKETS = 5_000  # pairs: 10k descriptors, half the process limit


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _verdict(value: float, target: float) -> str:
    return "target met" if value <= target else "TARGET MISSED"


def _beat() -> None:
    monitor: HeartbeatMonitor[object] = HeartbeatMonitor(TIMEOUT)
    keys = [object() for _ in range(N)]
    for key in keys:
        monitor.add(key)
    store = dict.fromkeys(keys, 0.0)
    batch = keys[::100]  # 1000 different connections per timed call
    beat = monitor.beat
    clock = time.monotonic

    def plain_dict() -> None:
        for key in batch:
            store[key] = clock()

    def ours() -> None:
        for key in batch:
            beat(key)

    result = compare(f"HeartbeatMonitor.beat, {N} tracked", plain_dict, ours,
                     baseline_label="dict[key] = time.monotonic()", per_item=len(batch))
    report("beat per call", f"{result.ours_s * 1e9:.0f} ns (target <= 400 ns: "
                            f"{_verdict(result.ours_s, 0.4e-6)})")


def _steady(ticks_per_round: int = 3) -> tuple[HeartbeatMonitor[int], _Clock, Callable[[], None]]:
    """100k keys that arrived over one timeout and beat every timeout / 3, round robin."""
    clock = _Clock()
    monitor: HeartbeatMonitor[int] = HeartbeatMonitor(TIMEOUT, clock=clock)
    ticks = round(TIMEOUT / monitor.tick)
    per_tick = N // ticks
    for key in range(N):
        clock.now = key * TIMEOUT / N
        monitor.add(key)
        if key % per_tick == 0:
            monitor.expired()
    chunk = N * ticks_per_round // ticks
    state = {"step": 0}

    def next_tick() -> None:
        """Advance one tick; the keys due to beat in it beat (untimed)."""
        step = state["step"]
        clock.now = TIMEOUT + step * monitor.tick
        beat = monitor.beat
        for i in range(step * chunk, (step + 1) * chunk):
            beat(i % N)
        state["step"] = step + 1

    for _ in range(ticks):  # one timeout of steady state before measuring
        next_tick()
        monitor.expired()
    return monitor, clock, next_tick


def _expired() -> None:
    monitor, clock, next_tick = _steady()
    ticks = round(TIMEOUT / monitor.tick)
    per_call: list[float] = []
    visited: list[int] = []
    for _ in range(3 * ticks):  # three timeouts, one call per tick like a runner
        next_tick()
        start = time.perf_counter()
        out = monitor.expired()
        per_call.append(time.perf_counter() - start)
        assert not out
        visited.append(monitor._visited)
    median = statistics.median(per_call)
    busy = [t for t, v in zip(per_call, visited, strict=True) if v]
    worst = max(per_call)
    print(f"HeartbeatMonitor.expired(), {N} tracked, none expiring, one call per tick "
          f"({monitor.tick:.3f} s) over three timeouts")
    report("worst call", f"{worst * 1e3:.3f} ms (target <= 1 ms: {_verdict(worst, 1e-3)})")
    report("median call / median call that re-armed a slot",
           f"{median * 1e3:.3f} ms / {statistics.median(busy) * 1e3:.3f} ms")
    report("keys looked at per call: mean / max",
           f"{statistics.mean(visited):.0f} / {max(visited)} of {N}")

    clock.now += monitor.tick / 2  # same tick again: nothing is due
    within = min(_time(monitor.expired, 10_000) for _ in range(5))
    report("within a tick (nothing due)", f"{within * 1e9:.0f} ns per call")

    def naive_scan() -> object:
        now = clock()
        return [k for k, t in monitor._last.items() if now - t >= TIMEOUT]

    scan = statistics.median(_time(naive_scan, 1) for _ in range(5))
    report(f"for scale, a full scan of {N} timestamps", f"{scan * 1e3:.2f} ms per call "
           f"({scan / median:.0f}x the median tick call)")


def _time(fn: Callable[[], object], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def _memory() -> None:
    keys = [object() for _ in range(N)]
    identities = [f"client-{i}" for i in range(N)]  # the application's own objects
    for label, with_identity in (("no identity", False), ("with identity", True)):
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        monitor: HeartbeatMonitor[object] = HeartbeatMonitor(TIMEOUT)
        for key, identity in zip(keys, identities, strict=True):
            monitor.add(key, identity=identity if with_identity else None)
        for key in keys:
            monitor.beat(key)
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        per = used / N
        report(f"memory per tracked connection ({label})",
               f"{per:.0f} bytes (target <= 200: {_verdict(per, 200)})")
        del monitor


def _sweep() -> None:
    socks, listener = _pairs(N_SOCKETS)
    servers = socks[1::2]
    try:
        kernel: KernelLiveness[object] = KernelLiveness(
            HeartbeatMonitor(TIMEOUT), sweep_interval=10.0,
            keepalive=KeepaliveConfig(10, 5, 3), shard_size=len(servers))
        for sock in servers:
            kernel.add(sock)
        result = compare(
            f"kernel-assisted sweep over {len(servers)} sockets",
            lambda: poll_tcp_info(servers),
            kernel.sweep,
            baseline_label="poll_tcp_info alone, same sockets",
            rounds=11,
            per_item=len(servers),
        )
        report("sweep per socket", f"{result.ours_s * 1e9:.0f} ns "
                                   f"(poll_tcp_info {result.baseline_s * 1e9:.0f} ns)")
        shard = 1024
        report(f"one shard of {shard} sockets (what one loop callback costs)",
               f"{result.ours_s * shard * 1e3:.2f} ms")
    finally:
        for s in socks:
            s.close()
        listener.close()


def _churn() -> None:
    """Time what keeping each socket's place costs when sockets come and go."""
    socks, listener = _pairs(N_SOCKETS)
    servers = socks[1::2]
    try:
        monitor: HeartbeatMonitor[object] = HeartbeatMonitor(TIMEOUT)
        kernel: KernelLiveness[object] = KernelLiveness(HeartbeatMonitor(TIMEOUT),
                                                        sweep_interval=10.0)
        for sock in servers:
            monitor.add(sock)
            kernel.add(sock)
        batch = servers[::5]

        def monitor_only() -> None:
            for sock in batch:
                monitor.remove(sock)
                monitor.add(sock)

        def ours() -> None:
            for sock in batch:
                kernel.remove(sock)
                kernel.add(sock)

        compare(f"KernelLiveness.remove + add (no keepalive), {len(servers)} tracked",
                monitor_only, ours, baseline_label="HeartbeatMonitor.remove + add",
                per_item=len(batch))
    finally:
        for s in socks:
            s.close()
        listener.close()


def run() -> None:
    _beat()
    _expired()
    _memory()
    _sweep()
    _churn()
