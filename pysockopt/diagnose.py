"""The old import path of the diagnosis: it lives in pysockopt.host now.

``from pysockopt.diagnose import RULES, Thresholds`` keeps working for code written before the
move. New code imports from ``pysockopt`` (or ``pysockopt.host``).
"""

from __future__ import annotations

from .host.diagnosis import diagnose, host_facts
from .host.model import Diagnosis, Evidence, Finding, HostFacts, Severity, Thresholds
from .host.rules import RULES, Rule

__all__ = [
    "RULES", "Diagnosis", "Evidence", "Finding", "HostFacts", "Rule", "Severity", "Thresholds",
    "diagnose", "host_facts",
]
