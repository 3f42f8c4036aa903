"""A scrape with the closed-connection log against the same scrape without it, in one run.

The exporter's log rides on the scrape's own look (host/closed.py CloseFeed): its cost is
listing the cookies of the look's dump in C and folding them in. A private namespace holds
``PAIRS`` established loopback pairs; two SocketCollectors scrape it alternately, one as
shipped and one whose scans drive no log (the baseline). Also the first scrape's latency, a
fresh collector each time, with and without the log. Wall time, and the CPU time of every
thread of the process (the dump runs on the in-namespace runner's thread, the log's reader on
its own). Root only (the namespace); target: the log adds at most 10% to a scrape.
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable

from ._harness import compare, report

#: Established pairs in the namespace (two sockets each; one process may hold 20,000).
PAIRS = 9_000


class _NoLog:
    """A CloseFeed that does nothing: the scans of the baseline collector drive no log."""

    def __init__(self) -> None:
        self.errors: dict[int, str] = {}
        self.netns: tuple[int, ...] = ()

    def entered(self, *args: object) -> None:
        return None

    def listed(self, *args: object) -> None:
        return None

    def observe(self, *args: object) -> None:
        return None

    def keep(self, inodes: Iterable[int]) -> None:
        for _ in inodes:
            pass

    def close(self) -> None:
        return None


def _collector(name: str, log: bool) -> object:
    from pysockopt import prometheus as prom

    c = prom.SocketCollector(netns=name)
    if not log:
        c._closes = lambda: _NoLog()  # type: ignore[method-assign, assignment, return-value]
    return c


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root (a private network namespace)")
        return
    from pysockopt import prometheus as prom

    resource.setrlimit(resource.RLIMIT_NOFILE, (2 * PAIRS + 1000, 2 * PAIRS + 1000))
    name = f"pso-bcs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    held: list[socket.socket] = []
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        from netns import run_in_netns

        def build() -> list[socket.socket]:
            srv = socket.create_server(("127.0.0.1", 0), backlog=4096)
            out = [srv]
            for _ in range(PAIRS):
                c = socket.create_connection(srv.getsockname())
                s, _ = srv.accept()
                out += [c, s]
            return out

        held = run_in_netns(name, build)
        firsts: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(5):
            for log in (False, True):
                c = _collector(name, log)
                t = time.perf_counter()
                prom.exposition(c)  # type: ignore[arg-type]
                firsts[log].append(time.perf_counter() - t)
                c.close()  # type: ignore[attr-defined]
        report(f"first scrape, {2 * PAIRS + 1} sockets, median of 5 fresh collectors",
               f"{statistics.median(firsts[False]) * 1e3:.1f} ms without the log, "
               f"{statistics.median(firsts[True]) * 1e3:.1f} ms with it")
        plain, logged = _collector(name, False), _collector(name, True)
        prom.exposition(logged)  # type: ignore[arg-type]  # subscribed: later scrapes compare
        for clock, what in ((time.perf_counter, "wall"), (time.process_time, "CPU, every thread")):
            compare(f"scrape with the closed-connection log ({what}), {2 * PAIRS + 1} sockets",
                    lambda: prom.exposition(plain),  # type: ignore[arg-type]
                    lambda: prom.exposition(logged),  # type: ignore[arg-type]
                    baseline_label="the same scrape without the log", target=1.1,
                    rounds=15, loops=1, clock=clock)
        logged.close()  # type: ignore[attr-defined]
    finally:
        for s in held:
            s.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
