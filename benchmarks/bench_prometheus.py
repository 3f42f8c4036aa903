"""The exporter's scrape with ~100k sockets against node_exporter's tcpstat scrape of the same.

The population is ~100k client-side TIME_WAIT sockets in a private network namespace
(net.ipv4.tcp_tw_reuse=0 there, so the kernel keeps them all; they hold no descriptor), built
by four processes in a few seconds: a TIME_WAIT socket lives 60 s, so the measurement runs
right after. node_exporter (--collector.disable-defaults --collector.tcpstat) and
`pysockopt exporter` run inside the namespace on loopback; each side is one HTTP GET of
/metrics, alternated. Needs root, prometheus_client and prometheus-node-exporter.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Iterator

from pysockopt._platform import CLONE_NEWNET

from ._harness import compare, report

#: Four destinations x 25,000: each holds 45% of the namespace's 55,001 ephemeral ports (the
#: kernel's port search slows down sharply past half full: 3 x 33,400 took 60 s here).
BUILDERS = 4
PER_BUILDER = 25_000
NODE_PORT = 19100
_libc = ctypes.CDLL(None, use_errno=True)

# A builder: PER_BUILDER connections to its own listener, each closed by the client first
# (the client keeps the TIME_WAIT), in batches so no process holds many descriptors.
BUILDER = r"""
import os, socket, sys
os.sched_setaffinity(0, range(os.cpu_count()))  # building is not measured: use every CPU
n = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
addr = listener.getsockname()
done = 0
while done < n:
    k = min(2000, n - done)
    clients = []
    for _ in range(k):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(addr)
        clients.append(c)
    servers = [listener.accept()[0] for _ in range(k)]
    for c in clients:
        c.close()
    for s in servers:
        s.close()
    done += k
print(done, flush=True)
"""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """Join a new private namespace for the whole benchmark; leave and delete it after."""
    name = f"pso-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        ns = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(ns)
        finally:
            os.close(ns)
        for key, value in (("ipv4/ip_local_port_range", "10000 65000"),
                           ("ipv4/tcp_tw_reuse", "0"),
                           ("ipv4/tcp_max_tw_buckets", "262144")):
            with open(f"/proc/sys/net/{key}", "w") as f:  # this namespace only
                f.write(value)
        yield name
    finally:
        _setns(home)
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def process(cmd: list[str], **kw: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, text=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        data: bytes = r.read()
        return data


def _wait(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            _get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root to build the population in a private network namespace")
        return
    node_exporter = shutil.which("prometheus-node-exporter")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        node_exporter = None
    if node_exporter is None:
        print("  skipped: needs prometheus-node-exporter and prometheus_client")
        return
    from pysockopt import Thresholds, diagnose, state_counts
    from pysockopt.prometheus import SocketCollector, exposition

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    with namespace(), \
            process([node_exporter, "--collector.disable-defaults", "--collector.tcpstat",
                     f"--web.listen-address=127.0.0.1:{NODE_PORT}"],
                    stderr=subprocess.DEVNULL), \
            process([sys.executable, "-m", "pysockopt", "exporter", "--listen", "127.0.0.1:0",
                     "--cache-seconds", "0"],  # a scan per request, as measured
                    stdout=subprocess.PIPE, env=env) as ours:
        assert ours.stdout is not None
        line = ours.stdout.readline()
        ours_url = line.split("serving ", 1)[1].strip()
        node_url = f"http://127.0.0.1:{NODE_PORT}/metrics"
        _wait(node_url)
        _wait(ours_url)
        idle_peak = _peak_kib(ours.pid)

        start = time.perf_counter()
        builders = [subprocess.Popen([sys.executable, "-c", BUILDER, str(PER_BUILDER)],
                                     stdout=subprocess.PIPE, text=True)
                    for _ in range(BUILDERS)]
        for b in builders:
            b.wait()
        built = time.perf_counter() - start
        total = sum(state_counts().values())
        report("population", f"{total} sockets ({BUILDERS} x {PER_BUILDER} client-side "
                             f"TIME_WAIT, built in {built:.1f} s; they expire 60 s after)")

        compare("exporter scrape (HTTP GET /metrics) with ~100k sockets",
                lambda: _get(node_url), lambda: _get(ours_url),
                baseline_label="node_exporter tcpstat scrape", target=1.0, rounds=7, loops=1)
        report("population after the scrapes", f"{sum(state_counts().values())} sockets")
        lines = _get(ours_url).decode().splitlines()
        fired = [line for line in lines if line.startswith("pysockopt_finding{")]
        report("series in one scrape", str(sum(1 for line in lines
                                                 if line and not line.startswith("#"))))
        report("findings in the scrape", "; ".join(fired) or "none")
        report("exporter process peak RSS",
               f"{_peak_kib(ours.pid) / 1024:.1f} MiB after the scrapes "
               f"({idle_peak / 1024:.1f} MiB before the population)")

        # The same scan in this process, for its parts and its Python-side peak.
        tracemalloc.start()
        t0 = time.perf_counter()
        exposition()
        scan_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        n = sum(state_counts().values())
        report("one scrape in-process (exposition())",
               f"{scan_s * 1000:.1f} ms; Python peak {peak / 2**20:.2f} MiB, plus ~"
               f"{n * 72 / 2**20:.1f} MiB of native records (72 bytes a socket, freed "
               "before it returns)")
        t0 = time.perf_counter()
        state_counts()
        counts_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        diagnose()
        diag_s = time.perf_counter() - t0
        report("for scale", f"state_counts() {counts_s * 1000:.1f} ms, "
                            f"diagnose() {diag_s * 1000:.1f} ms on the same sockets")
        # The rules' worst case: TIME_WAIT_PRESSURE firing on every destination (a ratio
        # below the 45% each holds), so the rule walks ~100k references.
        firing = SocketCollector(thresholds=Thresholds(time_wait_ratio=0.4))
        t0 = time.perf_counter()
        text = exposition(firing).decode()
        fire_s = time.perf_counter() - t0
        codes = sorted({line.split('"')[1] for line in text.splitlines()
                        if line.startswith("pysockopt_finding{")})
        report("one scrape in-process with TIME_WAIT_PRESSURE firing",
               f"{fire_s * 1000:.1f} ms (findings: {', '.join(codes)})")
        time.sleep(61)  # let the TIME_WAIT sockets go before the next population
        _established(node_url, ours_url, ours.pid)


def _established(node_url: str, ours_url: str, pid: int) -> None:
    """Compare again with ~100k ESTABLISHED sockets (holder processes keep the descriptors).

    Here the exporter asks the kernel for every ESTABLISHED socket's tcp_info (the idle and
    keepalive counts need it; node_exporter's dump asks for none), so its dump is the larger.
    """
    from pysockopt import state_counts

    from .bench_sockdiag import HOLDER, HOLDERS, PAIRS

    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, str(PAIRS)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(HOLDERS)]
    try:
        for h in holders:
            assert h.stdout is not None
            if not h.stdout.readline():
                raise RuntimeError("a socket holder died before it was ready")
        report("population", f"{sum(state_counts().values())} sockets, ESTABLISHED pairs "
                             f"held by {HOLDERS} processes")
        compare("exporter scrape (HTTP GET /metrics) with ~100k ESTABLISHED sockets",
                lambda: _get(node_url), lambda: _get(ours_url),
                baseline_label="node_exporter tcpstat scrape", target=1.0, rounds=7, loops=1)
        report("exporter process peak RSS", f"{_peak_kib(pid) / 1024:.1f} MiB")
        lines = _get(ours_url).decode().splitlines()
        report("series in one scrape", str(sum(1 for line in lines
                                                 if line and not line.startswith("#"))))
    finally:
        for h in holders:
            with contextlib.suppress(OSError):
                if h.stdin is not None:
                    h.stdin.close()
        for h in holders:
            h.wait()
