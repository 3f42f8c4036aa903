"""pysockopt: the truth about your TCP connections.

Tune TCP keepalive so dead peers are found in seconds, read the kernel's per-socket TCP_INFO,
see every TCP socket on the host like ``ss`` and diagnose the classic problems, explain errno
values in socket terms, and run heartbeats for 100k connections. Linux first; elsewhere a
clear error, never a wrong answer.
"""

from __future__ import annotations

from . import _load  # noqa: F401  # first: a missing C core is explained, not just named

# The modules of the old import paths (``from pysockopt.diagnose import RULES``) are loaded
# before the functions of the same names are bound below: a submodule imported later would
# replace the attribute ``pysockopt.diagnose`` (the function) with the module.
from . import connections as _old_connections  # noqa: F401
from . import diagnose as _old_diagnose  # noqa: F401
from .errno import (
    Action,
    ErrnoInfo,
    ErrorCategory,
    Triage,
    UnknownErrnoName,
    errno_info,
    errno_search,
    errno_table,
    triage,
)
from .errors import (
    Error,
    InvalidConfigError,
    NotANetnsError,
    UnsupportedClientError,
    UnsupportedPlatformError,
)
from .heartbeat import (
    CloseReason,
    HeartbeatMonitor,
    HeartbeatSender,
    HeartbeatSenderThread,
    HeartbeatStats,
    HeartbeatThread,
    KernelLiveness,
    LivenessPlan,
    Sweep,
)
from .host import (
    Connection,
    Counters,
    Diagnosis,
    Evidence,
    Finding,
    Process,
    Rates,
    Sample,
    Severity,
    Thresholds,
    Timer,
    Unseen,
    connections,
    diagnose,
    processes_of,
    sample,
    state_counts,
)
from .host.closed import (
    ClosedConnection,
    ClosedConnections,
    CloseStats,
    Lifetime,
    Verdict,
    closed_connections,
)
from .host.destroy import destroy, destroy_candidates
from .host.namespaces import (
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
from .host.remote import (
    KeepaliveChange,
    ProcessAudit,
    ProcessSocket,
    apply_keepalive_to_process,
    audit_process,
    process_sockets,
)
from .keepalive import (
    HostKeepalive,
    KeepaliveConfig,
    KeepaliveReport,
    KeepaliveSettings,
    apply_keepalive,
    apply_keepalive_many,
    read_keepalive,
    system_keepalive,
)
from .tcpinfo import (
    TCP_INFO_FIELDS,
    TcpInfo,
    TcpInfoField,
    TcpInfoPoller,
    TcpInfoReader,
    TcpState,
    poll_tcp_info,
    tcp_info,
    tcp_info_reader,
)

__version__ = "0.1.0"

__all__ = [
    # errors (every one below is also a pysockopt.Error)
    "Error",
    "InvalidConfigError",
    "NotANetnsError",
    "UnsupportedClientError",
    "UnsupportedPlatformError",
    # keepalive
    "HostKeepalive",
    "KeepaliveConfig",
    "KeepaliveReport",
    "KeepaliveSettings",
    "apply_keepalive",
    "apply_keepalive_many",
    "read_keepalive",
    "system_keepalive",
    # tcpinfo
    "TCP_INFO_FIELDS",
    "TcpInfo",
    "TcpInfoField",
    "TcpInfoPoller",
    "TcpInfoReader",
    "TcpState",
    "poll_tcp_info",
    "tcp_info",
    "tcp_info_reader",
    # errno
    "Action",
    "ErrnoInfo",
    "ErrorCategory",
    "Triage",
    "UnknownErrnoName",
    "errno_info",
    "errno_search",
    "errno_table",
    "triage",
    # connections / diagnose
    "Connection",
    "Process",
    "Timer",
    "connections",
    "processes_of",
    "state_counts",
    "Diagnosis",
    "Evidence",
    "Finding",
    "Severity",
    "Thresholds",
    "Unseen",
    "diagnose",
    # network namespaces and containers
    "CGROUP_PATTERNS",
    "CgroupPattern",
    "Container",
    "NamespaceList",
    "NetNamespace",
    "NetnsGoneError",
    "NetnsPermissionError",
    "NetnsResults",
    "NetnsSkipped",
    "container_from_cgroup",
    "for_each_netns",
    "namespaces",
    # samples and rates
    "Counters",
    "Rates",
    "Sample",
    "sample",
    # live remediation: another process's sockets
    "KeepaliveChange",
    "ProcessAudit",
    "ProcessSocket",
    "apply_keepalive_to_process",
    "audit_process",
    "destroy",
    "destroy_candidates",
    "process_sockets",
    # closed connections
    "CloseStats",
    "ClosedConnection",
    "ClosedConnections",
    "Lifetime",
    "Verdict",
    "closed_connections",
    # heartbeat
    "CloseReason",
    "HeartbeatMonitor",
    "HeartbeatSender",
    "HeartbeatSenderThread",
    "HeartbeatStats",
    "HeartbeatThread",
    "KernelLiveness",
    "LivenessPlan",
    "Sweep",
]
