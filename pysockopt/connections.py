"""The old import path of the host's sockets; everything is in pysockopt.host.connections now.

``from pysockopt.connections import processes_of`` keeps working for code written before the
move. New code imports from ``pysockopt`` (or ``pysockopt.host``).
"""

from __future__ import annotations

from .host.connections import (
    Connection,
    Process,
    Timer,
    connections,
    parse_state,
    processes_of,
    state_counts,
)

__all__ = [
    "Connection", "Process", "Timer", "connections", "parse_state", "processes_of",
    "state_counts",
]
