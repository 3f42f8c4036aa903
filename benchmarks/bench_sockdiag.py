"""Host-wide enumeration at 100k / 300k / 1M sockets: against the floor, ss and psutil.

The population lives in a private network namespace (nothing else on the host sees it or is
slowed by it, though every dump walks the kernel's one shared TCP hash table): connected
loopback pairs held by C holder processes (benchmarks/c/holder.c), each with a loopback address
of its own and at most 20,000 descriptors, the most a process may hold here. The namespace
grows from one size to the next (the sizes come from PSO_BENCH_SIZES, e.g. "100k,300k,1M";
default "100k"): a million sockets are built once, at the end. The benchmark joins the
namespace, measures, and removes everything (holders, then the namespace) at the end. Root.

The floor (benchmarks/c/floor_dump.c, compiled here) is a sock_diag dump and nothing more: one
TCPDIAG_GETSOCK request, every datagram read into one reused buffer and its messages counted.
At each size: connections(with_info=True) and state_counts() against the floor (with and
without INET_DIAG_INFO), ``ss -tin`` / ``ss -tan`` and psutil; the per-socket cost at each
size (it should be flat); the peak RSS of a listing against what its result holds (measured in
a child process); with PSO_BENCH_CALLGRIND=1, instruction counts per socket (valgrind) at the
first size, a second figure that the noise of a shared machine does not move.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from pysockopt import connections, state_counts
from pysockopt._platform import CLONE_NEWNET

from . import _cbuild
from ._harness import compare, report

#: Connected pairs per C holder: 2 descriptors each, plus a listener and stdio, under 20,000.
HOLDER_PAIRS = 9_990
#: The ~100k population other benchmarks use (population()): HOLDERS x PAIRS pairs. HOLDER is
#: a Python holder for benchmarks that start their own (bench_prometheus.py).
HOLDERS = 6
PAIRS = 8_400
HOLDER = r"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
pairs = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
addr = listener.getsockname()
held = []
for _ in range(pairs):
    c = socket.create_connection(addr)
    s, _ = listener.accept()
    held += [c, s]
print(len(held) + 1, flush=True)
sys.stdin.read()
"""
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def sizes() -> list[int]:
    """Socket counts to measure, from PSO_BENCH_SIZES ("100k,300k,1M"), ascending."""
    out = []
    for item in os.environ.get("PSO_BENCH_SIZES", "100k").split(","):
        text = item.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        out.append(int(float(text.rstrip("km")) * scale))
    return sorted(out)


class Population:
    """Holder processes in this namespace; ``grow(n)`` adds holders until ~n sockets are held."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.total = 0

    def grow(self, wanted: int) -> int:
        """Start holders (in parallel) until about ``wanted`` sockets are held; return it."""
        holder = _cbuild.program("holder")
        start = time.perf_counter()
        new: list[subprocess.Popen[str]] = []
        while self.total + 2 * HOLDER_PAIRS * len(new) < wanted:
            k = len(self.procs) + len(new)
            address = f"127.0.{1 + k // 250}.{1 + k % 250}"
            left = wanted - self.total - 2 * HOLDER_PAIRS * len(new)
            pairs = min(HOLDER_PAIRS, max(1, left // 2))
            new.append(subprocess.Popen([holder, address, str(pairs)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True))
        self.procs += new
        for p in new:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a socket holder died before it was ready")
            self.total += int(line)
        report("population", f"{self.total} sockets held by {len(self.procs)} processes "
                             f"(+{len(new)} in {time.perf_counter() - start:.1f} s)")
        return self.total

    def close(self) -> None:
        """End every holder this population started (by closing its stdin, else by pid)."""
        for p in self.procs:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()  # our own holder, by its Popen
                p.wait()


@contextlib.contextmanager
def population(holders: int = HOLDERS, pairs: int = PAIRS) -> Iterator[int]:
    """Yield (inside the namespace) the number of ~``holders * pairs * 2`` sockets held."""
    with namespace_population() as pop:
        yield pop.grow(holders * pairs * 2)


@contextlib.contextmanager
def namespace_population() -> Iterator[Population]:
    """Yield a Population inside a private namespace this process joined; remove all after."""
    name = f"pso-bench-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", name)
    pop = Population()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        ns = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(ns)  # the whole benchmark runs in there; ss, psutil and children inherit it
        finally:
            os.close(ns)
        with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
            f.write("10000 65000")  # this namespace only
        yield pop
    finally:
        pop.close()
        _setns(home)
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ss(*flags: str) -> int:
    out = subprocess.run(["ss", *flags], check=True, stdout=subprocess.PIPE).stdout
    return out.count(b"\n")


def _floor(with_info: bool) -> int:
    n = _cbuild.floor_dump()(1 if with_info else 0)
    if n < 0:
        raise OSError(-n, f"floor_dump: {os.strerror(-n)}")
    return int(n)


# Run in a child (same namespace): RSS before, the peak during, and RSS with the result held.
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
_MEMORY = r"""
import gc, json, sys
from pysockopt import connections
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets this process's peak RSS (VmHWM) to its current RSS
base = status("VmRSS")
conns = connections(with_info=sys.argv[1] == "1")
gc.collect()
held = status("VmRSS") - base
peak = status("VmHWM") - base
print(json.dumps({"n": len(conns), "held": held, "peak": peak}))
"""


def _memory(with_info: bool) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", _MEMORY, "1" if with_info else "0"],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, int] = json.loads(out)
    return result


# Under callgrind: nothing, the dump alone (kept in C, no decode), or the whole listing.
_CALLGRIND = r"""
import os, sys
from pysockopt.host.connections import connections, native_dump
if sys.argv[1] == "dump":
    with native_dump(with_info=True):
        pass
elif sys.argv[1] == "list":
    conns = connections(with_info=True)
os._exit(0)  # no teardown counted: freeing the result is not the listing's cost
"""


def _instructions(*argv: str) -> int:
    out = f"/tmp/pso-bench-cg-{uuid.uuid4().hex[:6]}"
    try:
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               *argv], check=True, capture_output=True, text=True)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)
    for line in done.stderr.splitlines():
        if "Collected" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    raise RuntimeError("callgrind printed no instruction count")


def _callgrind(n: int) -> None:
    if shutil.which("valgrind") is None:
        report("callgrind", "skipped: valgrind not installed")
        return
    py = [sys.executable, "-c", _CALLGRIND]
    base = _instructions(*py, "none")
    dump = _instructions(*py, "dump")
    listing = _instructions(*py, "list")
    floor = _instructions(_cbuild.program("floor_dump"), "info")
    report("callgrind, instructions per socket (user space; the kernel's walk not counted)",
           f"floor {floor / n:,.0f}; pysockopt dump into C records {(dump - base) / n:,.0f}; "
           f"decode into Connections {(listing - dump) / n:,.0f}; "
           f"whole listing {(listing - base) / n:,.0f}")


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root to build the population in a private network namespace")
        return
    try:
        import psutil  # type: ignore[import-untyped]  # a bench extra without stubs
    except ImportError:
        psutil = None
        print("  psutil missing (pip install '.[bench]'): its comparisons are skipped")
    per_socket: list[tuple[int, float, float]] = []
    with namespace_population() as pop:
        for i, wanted in enumerate(sizes()):
            total = pop.grow(wanted)
            per_socket.append(_measure(total, psutil, first=i == 0))
    print("per-socket CPU time across sizes (flat is the goal)")
    for total, floor_s, ours_s in per_socket:
        report(f"{total:>9} sockets", f"floor {floor_s / total * 1e9:6.0f} ns, "
                                      f"connections(with_info=True) {ours_s / total * 1e9:6.0f} ns"
                                      f" ({ours_s / floor_s:.2f}x)")


def _measure(total: int, psutil: object, first: bool) -> tuple[int, float, float]:
    label = f"{total // 1000}k sockets"
    big = total > 200_000
    counted = sum(state_counts().values())
    report("state_counts() total / floor dump / ss -tanH lines",
           f"{counted} / {_floor(False)} / {_ss('-tanH')} (held {total})")
    # Against the floor, both in this thread: CPU time (the kernel's walk runs in our recv
    # calls, so it is counted), which the other jobs on a shared machine do not inflate; wall
    # time shown too.
    # The listing is kept until the round's clock stopped: freeing a million Connections is
    # the caller's cost when it drops them, not the listing's (the floor keeps nothing).
    kept: list[object] = []

    def listing_kept() -> None:
        kept.append(connections(with_info=True))

    listing = compare(f"connections(with_info=True), {label}, CPU time", lambda: _floor(True),
                      listing_kept, baseline_label="floor: C sock_diag dump with INFO",
                      target=2.0, rounds=5 if big else 9, clock=time.thread_time, loops=1,
                      cleanup=kept.clear)
    compare(f"connections(with_info=True), {label}, wall time", lambda: _floor(True),
            listing_kept, baseline_label="floor: C sock_diag dump with INFO",
            rounds=3 if big else 7, loops=1, cleanup=kept.clear)
    compare(f"connections(with_info=True), {label}", lambda: _ss("-tin"),
            lambda: connections(with_info=True), baseline_label="ss -tin",
            target=None if big else 1.0, rounds=3 if big else 7)
    compare(f"state_counts(), {label}, CPU time", lambda: _floor(False), state_counts,
            baseline_label="floor: C sock_diag dump", rounds=5 if big else 11,
            clock=time.thread_time)
    compare(f"state_counts(), {label}", lambda: _ss("-tan"), state_counts,
            baseline_label="ss -tan (lines counted)", target=0.5, rounds=5 if big else 11)
    compare(f"connections(), {label}", lambda: _ss("-tan"), connections,
            baseline_label="ss -tan", rounds=3 if big else 7)
    if psutil is not None:
        net_connections = psutil.net_connections  # type: ignore[attr-defined]
        compare(f"state_counts(), {label}", lambda: net_connections("tcp"), state_counts,
                baseline_label='psutil.net_connections("tcp")', target=0.1, rounds=1 if big else 3)
        compare(f"connections(with_info=True), {label}", lambda: net_connections("tcp"),
                lambda: connections(with_info=True),
                baseline_label='psutil.net_connections("tcp")', rounds=1 if big else 3)
    for with_info in (True, False):
        mem = _memory(with_info)
        what = "connections(with_info=True)" if with_info else "connections()"
        ratio = mem["peak"] / mem["held"]
        verdict = ("  target met" if ratio <= 1.2 else "  TARGET MISSED") if with_info else ""
        report(f"{what} memory, {label}",
               f"peak {mem['peak'] / 2**20:.0f} MiB, result holds {mem['held'] / 2**20:.0f} MiB "
               f"({mem['held'] / mem['n']:.0f} B a socket): peak {ratio:.2f}x held"
               f"{' (target <= 1.20x)' if with_info else ''}{verdict}")
    if first and os.environ.get("PSO_BENCH_CALLGRIND") == "1":
        _callgrind(total)
    return total, listing.baseline_s, listing.ours_s
