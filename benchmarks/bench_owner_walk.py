"""A scrape with one CLOSE_WAIT while the host holds ~1M descriptors, against one with none.

Scrape cost used to follow the host's descriptors, not its sockets: one CLOSE_WAIT socket made
every scrape walk every /proc/*/fd for its owner (issue 22: 9-12 s at 1.01M descriptors, 59 s
with --all-netns). Here holder processes (benchmarks/c/holder.c, at most 20,000 descriptors
each) hold PSO_BENCH_DESCRIPTORS (default 1M) descriptors: dups of /dev/null by default
(what the walk must read; PSO_BENCH_HOLD=sockets holds loopback pairs in a namespace of their
own instead). `pysockopt exporter --cache-seconds 0` runs in a private namespace, started
afresh for each case, and is timed over HTTP:

- one namespace: the first scrape (owner cache cold) and the steady state (median of SCRAPES
  scrapes once every owner is named, owner cache warm; the scrapes until then are printed),
  with one CLOSE_WAIT socket in the namespace, against the same with none (the baseline,
  measured in the same run);
- --all-netns with 4 namespaces of its own, each holding one CLOSE_WAIT, against the same 4
  holding ESTABLISHED pairs only (every other namespace on the host is scanned too: the CLOSE_WAIT
  sockets each scrape saw are printed);
- node_exporter's tcpstat scrape in the same namespace, the anchor;
- departed clients: 100 requests sent to the blank line's edge, then closed; the time until
  the next real scrape is answered, against a quiet scrape.

- the worst case for the walk: the CLOSE_WAIT held by the process with the most descriptors
  (this one, holding a few more than any holder), which a walk reads last.

Hold the shared lock around the whole run. On a host where other work makes CLOSE_WAIT
sockets all the time, run it in a PID and mount namespace of its own, so that the walk and
--all-netns see only this run's processes and namespaces:

    flock /tmp/pso-bench.lock unshare --pid --fork --mount --mount-proc sh -c \
        'mkdir -p /run/netns && mount -t tmpfs none /run/netns && python -m benchmarks owner_walk'

Needs root, prometheus_client and prometheus-node-exporter.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from . import _cbuild
from ._harness import report
from .bench_prometheus import NODE_PORT, _get, namespace, process

SCRAPES = 5
DEPARTED = 100
NAMESPACES = 4
PER_HOLDER = 19_900  # a process here may hold at most 20,000 descriptors (this one: 19,950)
_libc = ctypes.CDLL(None, use_errno=True)


def _count(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _holders(total: int, kind: str) -> Iterator[int]:
    """Hold ``total`` descriptors in holder processes; yield how many are held."""
    holder = _cbuild.program("holder")
    procs: list[subprocess.Popen[str]] = []
    held = 0
    ns = None
    try:
        prefix: list[str] = []
        if kind == "sockets":  # in a namespace of their own: the one-namespace scan skips them
            ns = f"pso-bench-hold-{uuid.uuid4().hex[:6]}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            prefix = ["ip", "netns", "exec", ns]
        k = 0
        while held + PER_HOLDER * k < total:
            left = total - PER_HOLDER * k
            n = min(PER_HOLDER, left)
            args = (["--files", str(n)] if kind == "files"
                    else [f"127.0.{1 + k // 250}.{1 + k % 250}", str(max(1, n // 2))])
            procs.append(subprocess.Popen([*prefix, holder, *args], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True))
            k += 1
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a holder died before it was ready")
            held += int(line)
        report("population", f"{held} descriptors ({kind}) held by {len(procs)} processes")
        yield held
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()  # our own holder, by its Popen
                p.wait()
        if ns is not None:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def _exporter(*extra: str) -> Iterator[tuple[str, int]]:
    """Start a fresh exporter (owner cache cold); yield its URL once it serves, before a scrape."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    with process([sys.executable, "-m", "pysockopt", "exporter", "--listen", "127.0.0.1:0",
                  "--cache-seconds", "0", *extra], stdout=subprocess.PIPE,
                 stderr=subprocess.DEVNULL, env=env) as ours:
        assert ours.stdout is not None
        url = ours.stdout.readline().split("serving ", 1)[1].strip()
        yield url, ours.pid


def _timed(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    body = _get(url)
    return time.perf_counter() - t0, body


_CW = re.compile(rb'^pysockopt_tcp_sockets\{[^}]*state="close_wait"[^}]*\} (\S+)$', re.M)
_INCOMPLETE = re.compile(rb"^pysockopt_owner_lookup_incomplete (\S+)$", re.M)


def _seen(body: bytes) -> str:
    cw = sum(float(v) for v in _CW.findall(body))
    inc = _INCOMPLETE.search(body)
    return f"{cw:.0f} CLOSE_WAIT, {float(inc.group(1)) if inc else 0:.0f} owners unknown"


def _unknown(body: bytes) -> bool:
    inc = _INCOMPLETE.search(body)
    return inc is not None and float(inc.group(1)) > 0


def _case(label: str, *extra: str) -> tuple[float, float]:
    """First scrape and the median of the next SCRAPES of a fresh exporter."""
    with _exporter(*extra) as (url, pid):
        cpu0 = _cpu(pid)
        first, body = _timed(url)
        seen_first = f"{_seen(body)}, CPU {_cpu(pid) - cpu0:.3f} s"
        # Warm: until every owner is named (a walk stopped at the deadline goes on).
        warm: list[float] = []
        while _unknown(body) and len(warm) < 20:
            t, body = _timed(url)
            warm.append(t)
        if warm:
            seen_first += f"; then {len(warm)} scrape(s) until every owner was named: " + \
                ", ".join(f"{t:.3f}" for t in warm) + " s"
        cpu0 = _cpu(pid)
        times = []
        for _ in range(SCRAPES):
            t, body = _timed(url)
            times.append(t)
        cpu = (_cpu(pid) - cpu0) / SCRAPES
        steady = statistics.median(times)
    report(label, f"first {first:.3f} s ({seen_first}); steady {steady:.3f} s, "
                  f"CPU {cpu:.3f} s a scrape ({_seen(body)})")
    return first, steady


def _ratio(label: str, ours: tuple[float, float], base: tuple[float, float]) -> None:
    report(label, f"first scrape {ours[0] / base[0]:.2f}x, steady state "
                  f"{ours[1] / base[1]:.2f}x (target <= 2x)")


class _Pairs:
    """One listener and a connected pair in each namespace given (None: this one)."""

    def __init__(self, where: list[str | None]) -> None:
        self.socks: list[tuple[socket.socket, socket.socket, socket.socket]] = []
        for ns in where:
            out: list[tuple[socket.socket, socket.socket, socket.socket]] = []
            t = threading.Thread(target=self._make, args=(ns, out))
            t.start()
            t.join()
            self.socks += out

    @staticmethod
    def _make(ns: str | None, out: list[tuple[socket.socket, socket.socket, socket.socket]],
              ) -> None:
        if ns is not None:  # this thread only: the sockets stay in that namespace
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        out.append((srv, c, a))

    def close_wait(self) -> None:
        """Close each client: the accepted side, still held here, sits in CLOSE_WAIT."""
        for _, c, _ in self.socks:
            c.close()
        time.sleep(0.2)

    def close(self) -> None:
        for trio in self.socks:
            for s in trio:
                s.close()


def _departed(url: str, pid: int) -> None:
    quiet = statistics.median(_timed(url)[0] for _ in range(SCRAPES))
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
    after, _ = _timed(url)
    report(f"{DEPARTED} departed half-requests",
           f"next scrape {after:.3f} s against a quiet scrape {quiet:.3f} s "
           f"({after / quiet:.2f}x; target <= 2x); exporter CPU meanwhile "
           f"{_cpu(pid) - cpu0:.2f} s")


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root for private network namespaces")
        return
    node_exporter = shutil.which("prometheus-node-exporter")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        node_exporter = None
    if node_exporter is None:
        print("  skipped: needs prometheus-node-exporter and prometheus_client")
        return
    total = _count(os.environ.get("PSO_BENCH_DESCRIPTORS", "1M"))
    kind = os.environ.get("PSO_BENCH_HOLD", "files")
    names = [f"pso-bench-ow{i}-{uuid.uuid4().hex[:6]}" for i in range(NAMESPACES)]
    with namespace(), _holders(total, kind):
        here = _Pairs([None])
        try:
            base = _case("one namespace, no CLOSE_WAIT")
            with _exporter() as (url, pid):
                _departed(url, pid)
            with process([node_exporter, "--collector.disable-defaults", "--collector.tcpstat",
                          f"--web.listen-address=127.0.0.1:{NODE_PORT}"],
                         stderr=subprocess.DEVNULL):
                node_url = f"http://127.0.0.1:{NODE_PORT}/metrics"
                deadline = time.monotonic() + 20
                while True:
                    try:
                        _get(node_url)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                node = statistics.median(_timed(node_url)[0] for _ in range(SCRAPES))
                report("node_exporter tcpstat scrape (anchor)",
                       f"{node:.3f} s; ours without CLOSE_WAIT {base[1] / node:.2f}x of it")
            here.close_wait()
            ours = _case("one namespace, one CLOSE_WAIT")
            _ratio("one namespace: one CLOSE_WAIT against none", ours, base)
        finally:
            here.close()
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        pairs = None
        try:
            pairs = _Pairs(list[str | None](names))
            base = _case(f"--all-netns, {NAMESPACES} namespaces without CLOSE_WAIT",
                         "--all-netns")
            pairs.close_wait()
            ours = _case(f"--all-netns, {NAMESPACES} namespaces with one CLOSE_WAIT each",
                         "--all-netns")
            _ratio("--all-netns: one CLOSE_WAIT per namespace against none", ours, base)
        finally:
            if pairs is not None:
                pairs.close()
            for n in names:
                subprocess.run(["ip", "netns", "del", n], capture_output=True)
        # The worst case for the walk: the CLOSE_WAIT's holder is the process with the most
        # descriptors (read last). This process takes more than any holder has.
        resource.setrlimit(resource.RLIMIT_NOFILE, (20_000, 20_000))
        null = os.open("/dev/null", os.O_RDONLY)
        extra = [os.dup(null) for _ in range(PER_HOLDER + 50 - len(os.listdir("/proc/self/fd")))]
        here = _Pairs([None])
        try:
            base = _case("one namespace, no CLOSE_WAIT (owner-to-be the biggest process)")
            here.close_wait()
            ours = _case("one namespace, one CLOSE_WAIT held by the biggest process")
            _ratio("one namespace, biggest holder: one CLOSE_WAIT against none", ours, base)
        finally:
            here.close()
            for fd in [null, *extra]:
                os.close(fd)
