"""``diagnose()``: one look at every socket and the host facts, checked against RULES."""

from __future__ import annotations

from collections import defaultdict
from types import MappingProxyType

from .. import _host
from ..keepalive import HostKeepalive, system_keepalive
from ..tcpinfo import TcpState
from .connections import Connection, connections
from .model import Diagnosis, HostFacts, Thresholds
from .rules import RULES, Snapshot

__all__ = ["diagnose", "host_facts"]


def host_facts() -> HostFacts:
    """Read the sysctls and counters the rules use (for the calling thread's namespace)."""
    try:
        keepalive: HostKeepalive | None = system_keepalive()
    except OSError:
        keepalive = None
    tcp_ext = _host.netstat_counters("netstat", "TcpExt") or {}
    ports = _host.sysctl("net.ipv4.ip_local_port_range")
    return HostFacts(
        tcp_syncookies=_host.sysctl_int("net.ipv4.tcp_syncookies"),
        tcp_max_syn_backlog=_host.sysctl_int("net.ipv4.tcp_max_syn_backlog"),
        somaxconn=_host.sysctl_int("net.core.somaxconn"),
        ip_local_port_range=(ports[0], ports[1]) if ports and len(ports) == 2 else None,
        tcp_tw_reuse=_host.sysctl_int("net.ipv4.tcp_tw_reuse"),
        keepalive=keepalive,
        listen_overflows=tcp_ext.get("ListenOverflows"),
        listen_drops=tcp_ext.get("ListenDrops"),
    )


def diagnose(*, port: int | None = None, thresholds: Thresholds | None = None) -> Diagnosis:
    """Look at every TCP socket (those on ``port``, local or remote, if given) and report.

    One ``connections(with_info=True)`` snapshot is checked against every rule in ``RULES``;
    owning processes are looked up only for the sockets a finding names. Findings come
    worst first. Sees the calling thread's network namespace.
    """
    t = Thresholds() if thresholds is None else thresholds
    if not isinstance(t, Thresholds):
        raise TypeError(f"thresholds must be a Thresholds, not {type(t).__name__}")
    conns = connections(port=port, with_info=True)
    by_state: dict[TcpState, list[Connection]] = defaultdict(list)
    for c in conns:
        by_state[c.state].append(c)
    snap = Snapshot(conns, by_state, host_facts())
    findings = [f for rule in RULES for f in rule.check(rule, snap, t)]
    findings.sort(key=lambda f: -f.severity)  # stable: rule order within a severity
    counts = MappingProxyType({s: len(v) for s, v in sorted(by_state.items())})
    return Diagnosis(tuple(findings), counts, snap.host, port, t)
