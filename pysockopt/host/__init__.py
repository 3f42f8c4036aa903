"""The host's sockets: every TCP socket through sock_diag (or /proc), and their diagnosis.

- connections.py: ``connections()``, ``state_counts()``, ``Connection``, ``processes_of()``;
- namespaces.py: ``namespaces()``, ``NetNamespace``, ``Container``, ``for_each_netns()``
  (the import path; the code is in containers.py, census.py and entering.py, one job each);
- model.py: what a diagnosis says (``Finding``, ``Diagnosis``, ``Thresholds``, ...);
- rules.py: the diagnosis rules as data (``RULES``);
- render.py: a Diagnosis as text for a terminal;
- diagnosis.py: ``diagnose()`` and ``host_facts()``;
- sample.py: ``Sample``, ``Counters`` and the ``Rates`` between two samples;
- owners.py: who holds a socket (``processes_of``, the owner cache and book);
- look.py: ``look.look()``, the one look at a namespace that diagnose, watch, ``sample()``
  and the exporter share (not re-exported here, so the module keeps its name), and the
  exporter's scan;
- closed.py: ``closed_connections()``, ``ClosedConnection`` and ``CloseStats``: the connections
  already gone (the kernel's destroy announcements joined with looks).
"""

from __future__ import annotations

from .closed import (
    ClosedConnection,
    ClosedConnections,
    CloseStats,
    CloseTotals,
    Lifetime,
    Verdict,
    closed_connections,
)
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
from .look import sample
from .model import Diagnosis, Evidence, Finding, HostFacts, Severity, Thresholds, Unseen
from .namespaces import (
    CGROUP_PATTERNS,
    CgroupPattern,
    Container,
    NamespaceList,
    NetNamespace,
    NetnsGoneError,
    NetnsPermissionError,
    NetnsResults,
    NetnsSkipped,
    container_from_cgroup,
    for_each_netns,
    namespaces,
)
from .rules import RULES, Rule
from .sample import (
    Change,
    Counters,
    Destination,
    ListenerDrops,
    OwnerGrowth,
    PortUse,
    Rates,
    Sample,
)

__all__ = [
    "CGROUP_PATTERNS",
    "RULES",
    "CgroupPattern",
    "Connection",
    "Container",
    "Diagnosis",
    "Evidence",
    "Finding",
    "HostFacts",
    "NamespaceList",
    "NetNamespace",
    "NetnsGoneError",
    "NetnsPermissionError",
    "NetnsResults",
    "NetnsSkipped",
    "Process",
    "Rule",
    "Severity",
    "Thresholds",
    "Timer",
    "Unseen",
    "connections",
    "container_from_cgroup",
    "diagnose",
    "for_each_netns",
    "host_facts",
    "namespaces",
    "parse_state",
    "processes_of",
    "state_counts",
    "Change",
    "Counters",
    "Destination",
    "ListenerDrops",
    "OwnerGrowth",
    "PortUse",
    "Rates",
    "Sample",
    "sample",
    "CloseStats",
    "CloseTotals",
    "ClosedConnection",
    "ClosedConnections",
    "Lifetime",
    "Verdict",
    "closed_connections",
]
