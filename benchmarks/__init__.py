"""Side-by-side benchmarks: baseline and pysockopt alternately in one process, ratios printed.

Run them all with ``python -m benchmarks`` (or ``python -m benchmarks keepalive`` for the
modules whose name contains ``keepalive``). Never part of the test suite.
"""
