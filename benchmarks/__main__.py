"""Run every ``benchmarks/bench_*.py`` (or those whose name contains an argument)."""

from __future__ import annotations

import importlib
import os
import pathlib
import sys

from ._harness import RESULTS


def main(argv: list[str]) -> int:
    # One CPU for the whole run: baseline and ours then share caches and frequency, and the
    # scheduler does not move the process between rounds.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    here = pathlib.Path(__file__).resolve().parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    if argv:
        names = [n for n in names if any(arg in n for arg in argv)]
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").run()
        print()
    missed = [r for r in RESULTS if r.met is False]
    print(f"{len(RESULTS)} comparisons, {len(missed)} missed their target")
    for r in missed:
        print(f"  missed: {r.name} ({r.ratio:.3f}x, target <= {r.target:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
