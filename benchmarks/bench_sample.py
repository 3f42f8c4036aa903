"""sample() with ~100k sockets: what one look costs against the calls it is made of.

A metrics exporter takes one ``sample(detail=False)`` per scrape: it should cost about one
``state_counts()`` (the listener dump and three small /proc files add little). ``sample()``
(detail, for the time rules) decodes the dump into Connections and groups them. The
population is bench_sockdiag's, in a private network namespace. Needs root.
"""

from __future__ import annotations

import os

from pysockopt import connections, sample, state_counts

from ._harness import compare, report
from .bench_sockdiag import population


def run() -> None:
    if os.geteuid() != 0:
        print("  skipped: needs root to build the population in a private network namespace")
        return
    with population() as total:
        report("sample() total / held", f"{sample(detail=False).total} / {total}")
        compare("sample(detail=False) with ~100k sockets", state_counts,
                lambda: sample(detail=False), baseline_label="state_counts()", target=1.3,
                rounds=11)
        compare("sample() with ~100k sockets", connections, sample,
                baseline_label="connections()", target=1.5, rounds=5)
