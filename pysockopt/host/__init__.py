"""The host's sockets: every TCP socket through sock_diag (or /proc), and their diagnosis.

- connections.py: ``connections()``, ``state_counts()``, ``Connection``, ``processes_of()``;
- model.py: what a diagnosis says (``Finding``, ``Diagnosis``, ``Thresholds``, ...);
- rules.py: the diagnosis rules as data (``RULES``);
- render.py: a Diagnosis as text for a terminal;
- diagnosis.py: ``diagnose()`` and ``host_facts()``.
"""

from __future__ import annotations

from .connections import (
    Connection,
    Process,
    Timer,
    connections,
    parse_state,
    processes_of,
    state_counts,
)
from .diagnosis import diagnose, host_facts
from .model import Diagnosis, Evidence, Finding, HostFacts, Severity, Thresholds
from .rules import RULES, Rule

__all__ = [
    "RULES",
    "Connection",
    "Diagnosis",
    "Evidence",
    "Finding",
    "HostFacts",
    "Process",
    "Rule",
    "Severity",
    "Thresholds",
    "Timer",
    "connections",
    "diagnose",
    "host_facts",
    "parse_state",
    "processes_of",
    "state_counts",
]
