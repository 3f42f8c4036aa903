"""diagnose() and watch at 100k / 300k / 1M sockets: memory against a scrape, time against ss.

issue 24's first target: at a million sockets, the peak RSS of ``diagnose()`` and of a
``watch`` beat (``diagnose(earlier=...)``) at most 2x the exporter's scrape
(``exposition()``) at the same population, and their time at most 0.3x ``ss -tanp``;
``diagnose --all-netns`` bounded by its largest namespace, not the sum of them.

The population is bench_sockdiag.py's (ESTABLISHED loopback pairs held by C processes in a
private namespace, sizes from PSO_BENCH_SIZES). Each memory figure is taken in a child process
of its own (VmHWM after a reset, over the RSS the child had before the call, pysockopt and
prometheus_client imported): a peak is a process's, and one call must not inherit another's.
With PSO_BENCH_ALL_NETNS=1 a second namespace of the first size is made next to the first
population and ``pysockopt diagnose --all-netns`` is measured against ``diagnose --netns``
of one of them. Root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pysockopt import diagnose

from . import bench_sockdiag
from ._harness import compare, report

# Runs in a child in the population's namespace: the peak RSS of one call over the RSS before.
_CHILD = r"""
import gc, json, sys, time
from pysockopt import diagnose
from pysockopt.prometheus import SocketCollector, exposition
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
what = sys.argv[1]
collector = SocketCollector()
earlier = diagnose(port=1).sample if what == "watch" else None  # imports and caches warm
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets this process's peak RSS (VmHWM) to its current RSS
base = status("VmRSS")
start = time.perf_counter()
if what == "diagnose":
    result = diagnose()
elif what == "watch":  # two beats of `pysockopt watch`, which keeps only the last sample
    previous = diagnose().sample
    result = diagnose(earlier=previous)
else:
    result = exposition(collector)
elapsed = time.perf_counter() - start
print(json.dumps({"peak": status("VmHWM") - base, "seconds": elapsed}))
"""


def _child(what: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, what], check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def _cli_peak(*args: str) -> float:
    """Peak RSS (bytes) of a whole ``python -m pysockopt ARGS`` process (ru_maxrss)."""
    out = subprocess.run(
        [sys.executable, "-c",
         "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
         sys.executable, "-m", "pysockopt", *args],
        check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) * 1024.0


#: ss -tanp walks every process's descriptors for each socket's owner: 13 s at 100k sockets
#: here, 156 s at 300k, far longer at 1M. Past this many seconds it is cut off and the time
#: taken so far is its (lower-bound) time, so the ratio is an upper bound.
SS_LIMIT = 120.0


def _ss_tanp() -> None:
    try:
        subprocess.run(["ss", "-tanp"], check=True, stdout=subprocess.DEVNULL,
                       timeout=SS_LIMIT)
    except subprocess.TimeoutExpired:
        report("ss -tanp", f"cut off after {SS_LIMIT:.0f} s: its time is at least that")


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root to build the population in a private network namespace")
        return
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("  skipped: needs prometheus_client (the exporter's scrape is the baseline)")
        return
    with bench_sockdiag.namespace_population() as pop:
        for i, wanted in enumerate(bench_sockdiag.sizes()):
            total = pop.grow(wanted)
            _measure(total)
            if i == 0 and os.environ.get("PSO_BENCH_ALL_NETNS") == "1":
                _all_netns(total)


def _measure(total: int) -> None:
    label = f"{total // 1000}k sockets"
    big = total > 200_000
    compare(f"diagnose(), {label}", _ss_tanp, diagnose, baseline_label="ss -tanp",
            target=0.3, rounds=1 if big else 3, loops=1)  # ss -tanp: minutes at 1M
    scrape = _child("scrape")
    for what in ("diagnose", "watch"):
        got = _child(what)
        ratio = got["peak"] / scrape["peak"]
        verdict = "target met" if ratio <= 2.0 else "TARGET MISSED"
        report(f"{what} peak RSS, {label}",
               f"{got['peak'] / 2**20:.0f} MiB over the process before it, against one scrape's "
               f"{scrape['peak'] / 2**20:.0f} MiB: {ratio:.2f}x (target <= 2.00x)  {verdict}; "
               f"{got['seconds'] * 1000:.0f} ms (scrape {scrape['seconds'] * 1000:.0f} ms)")


def _all_netns(total: int) -> None:
    """Measure --all-netns against one namespace, with a second as large as the first."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        first = os.readlink("/proc/thread-self/ns/net")
        with bench_sockdiag.namespace_population() as second:
            second.grow(total)
            bench_sockdiag._setns(here)  # measure from the first one
            one = _cli_peak("diagnose", "--netns", "/proc/self/ns/net")
            both = _cli_peak("diagnose", "--all-netns")
            report("diagnose --all-netns peak RSS",
                   f"{both / 2**20:.0f} MiB (every namespace, two of {total} sockets) against "
                   f"{one / 2**20:.0f} MiB for one of them ({first}): {both / one:.2f}x "
                   "(bounded by the largest namespace: ~1x)")
    finally:
        os.close(here)
