"""The exporter as a service: departed clients, and what a scrape costs at 10k and 100k sockets.

Departed clients (the issue's exporter_idle2 probe, as a benchmark): `pysockopt exporter
--cache-seconds 0` in a private namespace; 200 connections each send a request line and a
header but never the blank line, then all close; how long from then until a real scrape is
answered, against one scan's time, and the exporter's CPU meanwhile; in an empty namespace and
with the 10k and 100k populations below. Before the bounded serving this took 7.0 s in an
empty namespace (3.7 s of CPU: one full scan per departed client, serially).

Cost: ESTABLISHED loopback pairs held by processes in the namespace (10k and 100k sockets);
per scrape the wall time (HTTP GET, median of 7), the exporter's CPU (its /proc stat delta
over those scrapes) and its peak RSS, beside node_exporter's tcpstat scrape of the same
sockets. PYSOCKOPT_BENCH_1M=1 adds 1M sockets (63 holder processes, ~2 GiB of kernel memory).
Needs root, prometheus_client, prometheus-node-exporter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from ._harness import report
from .bench_prometheus import NODE_PORT, _get, _peak_kib, _wait, namespace, process
from .bench_sockdiag import HOLDER

DEPARTED = 200
SCRAPES = 7


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median_get(url: str, n: int = SCRAPES) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        _get(url)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def _exporter() -> Iterator[tuple[str, int]]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    with process([sys.executable, "-m", "pysockopt", "exporter", "--listen", "127.0.0.1:0",
                  "--cache-seconds", "0"], stdout=subprocess.PIPE, env=env) as ours:
        assert ours.stdout is not None
        url = ours.stdout.readline().split("serving ", 1)[1].strip()
        _wait(url)
        yield url, ours.pid


def _departed(url: str, pid: int, where: str) -> None:
    scan = _median_get(url)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    clients = []
    for _ in range(DEPARTED):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        clients.append(c)
    time.sleep(1)  # every handler is reading its request
    cpu0 = _cpu(pid)
    for c in clients:
        c.close()
    t0 = time.perf_counter()  # from when the last one left, as exporter_idle2 measures
    _get(url)
    after = time.perf_counter() - t0
    report(f"{DEPARTED} departed half-requests, {where}",
           f"next scrape answered {after * 1000:.1f} ms after they left (one scan: "
           f"{scan * 1000:.1f} ms; added {max(0.0, after - scan) / scan:.2f} scans); "
           f"exporter CPU meanwhile {_cpu(pid) - cpu0:.2f} s")


def _cost(url: str, pid: int, node_url: str, sockets: int) -> None:
    holders = []
    pairs = sockets // 2
    per = 8_000
    try:
        for start in range(0, pairs, per):
            holders.append(subprocess.Popen([sys.executable, "-c", HOLDER,
                                             str(min(per, pairs - start))],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True))
        for h in holders:
            assert h.stdout is not None
            if not h.stdout.readline():
                raise RuntimeError("a socket holder died before it was ready")
        cpu0 = _cpu(pid)
        ours = _median_get(url)
        cpu = (_cpu(pid) - cpu0) / SCRAPES
        node = _median_get(node_url)
        report(f"{sockets // 1000}k ESTABLISHED sockets",
               f"scrape {ours * 1000:.0f} ms (node_exporter tcpstat {node * 1000:.0f} ms, "
               f"{ours / node:.2f}x); exporter CPU {cpu * 1000:.0f} ms a scrape; "
               f"peak RSS {_peak_kib(pid) / 1024:.0f} MiB")
        _departed(url, pid, f"{sockets // 1000}k sockets")
    finally:
        for h in holders:
            with contextlib.suppress(OSError):
                if h.stdin is not None:
                    h.stdin.close()
        for h in holders:
            h.wait()


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root for a private network namespace")
        return
    node_exporter = shutil.which("prometheus-node-exporter")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        node_exporter = None
    if node_exporter is None:
        print("  skipped: needs prometheus-node-exporter and prometheus_client")
        return
    with namespace():
        with _exporter() as (url, pid):
            _departed(url, pid, "empty namespace")
        with process([node_exporter, "--collector.disable-defaults", "--collector.tcpstat",
                      f"--web.listen-address=127.0.0.1:{NODE_PORT}"],
                     stderr=subprocess.DEVNULL), _exporter() as (url, pid):
            node_url = f"http://127.0.0.1:{NODE_PORT}/metrics"
            _wait(node_url)
            report("exporter idle", f"peak RSS {_peak_kib(pid) / 1024:.0f} MiB, scrape "
                                    f"{_median_get(url) * 1000:.1f} ms")
            sizes = [10_000, 100_000]
            if os.environ.get("PYSOCKOPT_BENCH_1M"):  # ~2 GiB of kernel memory, minutes
                sizes.append(1_000_000)
            for sockets in sizes:
                _cost(url, pid, node_url, sockets)
