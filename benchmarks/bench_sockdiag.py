"""Host-wide enumeration with ~100k sockets: state_counts() and connections() against ss and psutil.

The population lives in a private network namespace (nothing else on the host sees it or is
slowed by it): several holder processes, since one process may hold at most 20,000
descriptors, each keeping connected loopback pairs open until we close its stdin. The
benchmark joins the namespace, measures, and removes everything at the end. Needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator

from pysockopt import connections, state_counts
from pysockopt._platform import CLONE_NEWNET

from ._harness import compare, report

#: Sockets to build: HOLDERS processes x PAIRS connected pairs x 2 sockets (+ a listener each).
HOLDERS = 6
PAIRS = 8_400
_libc = ctypes.CDLL(None, use_errno=True)

# A holder: raise the fd limit to the hard cap, make PAIRS loopback pairs, say how many,
# then hold them until stdin closes (so it can never outlive the benchmark).
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


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def population(holders: int = HOLDERS, pairs: int = PAIRS) -> Iterator[int]:
    """Yield (inside the namespace) the number of sockets held; tear everything down after."""
    name = f"pso-bench-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", name)
    procs: list[subprocess.Popen[str]] = []
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        ns = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(ns)  # the whole benchmark runs in there; ss and psutil inherit it
        finally:
            os.close(ns)
        with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
            f.write("10000 65000")  # this namespace only
        start = time.perf_counter()
        for _ in range(holders):
            procs.append(subprocess.Popen([sys.executable, "-c", HOLDER, str(pairs)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True))
        total = 0
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a socket holder died before it was ready")
            total += int(line)
        report("population", f"{total} sockets held by {holders} processes, built in "
                             f"{time.perf_counter() - start:.1f} s")
        yield total
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _setns(home)
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ss(*flags: str) -> int:
    out = subprocess.run(["ss", *flags], check=True, stdout=subprocess.PIPE).stdout
    return out.count(b"\n")


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root to build the population in a private network namespace")
        return
    try:
        import psutil
    except ImportError:
        psutil = None
        print("  psutil missing (pip install '.[bench]'): its comparison is skipped")

    with population() as total:
        counted = sum(state_counts().values())
        listed = _ss("-tanH")
        report("state_counts() total / ss -tanH lines", f"{counted} / {listed} (held {total})")

        compare("state_counts() with ~100k sockets", lambda: _ss("-tan"), state_counts,
                baseline_label="ss -tan (lines counted)", target=0.5, rounds=11)
        if psutil is not None:
            compare("state_counts() with ~100k sockets",
                    lambda: psutil.net_connections("tcp"), state_counts,
                    baseline_label='psutil.net_connections("tcp")', target=0.1, rounds=3)
        compare("connections(with_info=True) with ~100k sockets", lambda: _ss("-tin"),
                lambda: connections(with_info=True),
                baseline_label="ss -tin", target=1.0, rounds=7)
        compare("connections() with ~100k sockets", lambda: _ss("-tan"), connections,
                baseline_label="ss -tan", rounds=7)

        tracemalloc.start()
        conns = connections()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # The C side's record array (72 bytes a socket) is freed before connections()
        # returns and is not seen by tracemalloc: add it.
        native = len(conns) * 72
        report("connections() peak memory",
               f"{(peak + native) / 2**20:.1f} MiB for {len(conns)} sockets "
               f"({(peak + native) / max(len(conns), 1):.0f} bytes a socket; "
               f"{native / 2**20:.1f} MiB of it native records)")
        tracemalloc.start()
        conns = connections(with_info=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        report("connections(with_info=True) peak memory (Python side)",
               f"{peak / 2**20:.1f} MiB for {len(conns)} sockets")
        del conns
