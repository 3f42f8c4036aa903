"""The benchmark harness: alternate baseline and candidate, report medians and the ratio."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    baseline_label: str
    baseline_s: float
    ours_s: float
    target: float | None

    @property
    def ratio(self) -> float:
        return self.ours_s / self.baseline_s

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


RESULTS: list[Result] = []


def _fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        if seconds * scale >= 1:
            return f"{seconds * scale:8.3f} {unit}"
    return f"{seconds * 1e9:8.3f} ns"


def _time_per_call(fn: Callable[[], object], loops: int,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    for _ in range(loops):
        fn()
    return (clock() - start) / loops


def _calibrate(fn: Callable[[], object], budget: float = 0.02) -> int:
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - start >= budget or loops >= 1 << 22:
            return loops
        loops *= 2


def compare(
    name: str,
    baseline: Callable[[], object],
    ours: Callable[[], object],
    *,
    baseline_label: str,
    target: float | None = None,
    rounds: int = 21,
    per_item: int = 1,
    loops: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cleanup: Callable[[], object] | None = None,
) -> Result:
    """Time ``baseline`` and ``ours`` alternately; print medians and ``ours / baseline``.

    ``per_item`` divides the times (e.g. 10_000 for a call that handles 10k sockets).
    ``clock``: wall time by default; ``time.thread_time`` counts only this thread's CPU time
    (user and kernel, a dump's walk included), which waiting for a CPU that other jobs hold
    does not inflate; only for work done in this thread (no subprocess). ``cleanup`` runs
    after each timed batch, outside the clock (e.g. to drop results kept by ``ours``, whose
    freeing is the caller's cost later, not the call's).
    """
    n = loops or max(_calibrate(baseline), _calibrate(ours))
    if cleanup is not None:
        cleanup()
    base_t: list[float] = []
    ours_t: list[float] = []
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(rounds):
            # Alternate which goes first so drift and cache warmth favour neither side.
            pair = ((baseline, base_t), (ours, ours_t))
            for fn, acc in pair if i % 2 == 0 else reversed(pair):
                acc.append(_time_per_call(fn, n, clock) / per_item)
                if cleanup is not None:
                    cleanup()
    finally:
        if gc_was:
            gc.enable()
    result = Result(name, baseline_label, statistics.median(base_t), statistics.median(ours_t),
                    target)
    RESULTS.append(result)
    verdict = "" if result.met is None else ("  target met" if result.met else "  TARGET MISSED")
    tgt = "" if target is None else f" (target <= {target:.2f}x)"
    unit = " per item" if per_item > 1 else ""
    print(f"{name}{unit}")
    print(f"  baseline {baseline_label:<40} {_fmt(result.baseline_s)}")
    print(f"  pysockopt{'':<40} {_fmt(result.ours_s)}")
    print(f"  ratio {result.ratio:.3f}x{tgt}{verdict}", flush=True)
    return result


def report(label: str, value: str) -> None:
    """Print a figure that has no baseline (memory use, absolute latency)."""
    print(f"  {label}: {value}", flush=True)
