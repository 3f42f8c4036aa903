"""What a diagnosis says: severities, thresholds, findings, the host facts, the result.

Value types only: the rules that produce findings are in rules.py, the text report in
render.py, and ``diagnose()`` in diagnosis.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import NamedTuple

from .._host import Counters
from ..errors import InvalidConfigError
from ..keepalive import HostKeepalive
from ..tcpinfo import TcpState
from .connections import Connection
from .namespaces import NetNamespace
from .owners import Process, Unseen
from .sample import Sample

__all__ = ["Diagnosis", "Evidence", "Finding", "HostFacts", "Severity", "Thresholds", "Unseen"]


class Severity(IntEnum):
    """How much a finding matters. WARNING and CRITICAL make ``pysockopt diagnose`` exit 1."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        """The name in lower case, as reports print it."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.name  # print(finding.severity) shows WARNING, not the IntEnum's 1


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where each rule starts to report. The defaults suit a busy server; tune per host.

    Counts are sockets in one group: per listener for SYN_RECV; for the CLOSE_WAIT,
    FIN_WAIT1, FIN_WAIT2 and LAST_ACK piles per listening port (server side), else per
    remote endpoint, else per owning process (client side). ``time_wait_ratio`` is TIME_WAIT
    sockets from one local address to one remote endpoint over the size of
    net.ipv4.ip_local_port_range; ``accept_queue_ratio`` is accept queue over backlog;
    ``retrans`` counts consecutive retransmissions of one connection.

    The rules that need an interval (``diagnose(interval=...)``): ``close_wait_growth`` is
    the net growth of one owner's CLOSE_WAIT sockets during it; ``port_exhaustion_seconds``
    the time left before one destination's ephemeral ports run out; ``retrans_ratio``
    retransmitted over sent segments; ``syn_recv_growth`` the growth of one port's
    SYN_RECV entries; ``aborts`` connections aborted on timeout or on data. From the
    closed-connection log over the interval: ``short_lived`` connections to one destination
    by one owner that no look saw (opened and closed between two looks); ``peers_dying``
    connections to one remote address given up on (keepalive, user timeout,
    retransmissions); ``unacked_closes`` closes with unacknowledged data per port and owner.
    From the host
    counters: ``orphan_ratio`` (orphans over net.ipv4.tcp_max_orphans), ``tcp_mem_ratio``
    (TCP memory over tcp_mem's pressure value), ``conntrack_ratio`` (nf_conntrack_count
    over nf_conntrack_max), ``time_wait_buckets_ratio`` (TIME_WAIT over
    tcp_max_tw_buckets).
    """

    syn_recv: int = 100
    accept_queue_ratio: float = 1.0
    listen_drops: int = 1
    close_wait: int = 10
    time_wait_ratio: float = 0.5
    fin_wait1: int = 50
    fin_wait2: int = 50
    last_ack: int = 50
    retrans: int = 3
    idle_seconds: int = 1800
    close_wait_growth: int = 3
    port_exhaustion_seconds: int = 600
    retrans_ratio: float = 0.02
    syn_recv_growth: int = 50
    aborts: int = 10
    orphan_ratio: float = 0.5
    tcp_mem_ratio: float = 1.0
    conntrack_ratio: float = 0.8
    time_wait_buckets_ratio: float = 0.8
    short_lived: int = 100
    peers_dying: int = 3
    unacked_closes: int = 5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidConfigError(f.name, value, "a number > 0")


class Evidence(NamedTuple):
    """One number behind a finding, e.g. ``Evidence("accept_queue", 129)``."""

    name: str
    value: int | float | str


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: a stable ``code``, how bad, one line saying what, the numbers, what to do.

    ``port`` is the local port it is about (None for host-wide findings); ``sockets`` holds
    up to a few of the sockets concerned and ``processes`` the processes holding them, where
    the rule looks them up. ``netns``: the network namespace it was found in, when that is not
    the caller's own (``diagnose(netns=...)``).
    """

    code: str
    severity: Severity
    summary: str
    evidence: tuple[Evidence, ...]
    advice: str
    port: int | None = None
    sockets: tuple[Connection, ...] = ()
    processes: tuple[Process, ...] = ()
    netns: NetNamespace | None = None

    def as_dict(self) -> dict[str, object]:
        """Return the finding for JSON."""
        return {
            "code": self.code,
            "severity": self.severity.label,
            "summary": self.summary,
            "evidence": {e.name: e.value for e in self.evidence},
            "advice": self.advice,
            "port": self.port,
            "processes": [{"pid": p.pid, "command": p.command} for p in self.processes],
            "sockets": [f"{c.state.label} {c.local} {c.remote}" for c in self.sockets],
            "netns": None if self.netns is None else self.netns.inode,
        }


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The host settings the rules weigh findings against (this network namespace's).

    A view of the look's ``Counters`` (the one type the host's counters and sysctls are read
    into): each fact is a property of it, never a second copy.
    """

    counters: Counters

    @property
    def tcp_syncookies(self) -> int | None:
        """net.ipv4.tcp_syncookies."""
        return self.counters.tcp_syncookies

    @property
    def tcp_max_syn_backlog(self) -> int | None:
        """net.ipv4.tcp_max_syn_backlog."""
        return self.counters.tcp_max_syn_backlog

    @property
    def somaxconn(self) -> int | None:
        """net.core.somaxconn."""
        return self.counters.somaxconn

    @property
    def ip_local_port_range(self) -> tuple[int, int] | None:
        """net.ipv4.ip_local_port_range (low, high)."""
        return self.counters.ip_local_port_range

    @property
    def tcp_tw_reuse(self) -> int | None:
        """net.ipv4.tcp_tw_reuse."""
        return self.counters.tcp_tw_reuse

    @property
    def keepalive(self) -> HostKeepalive | None:
        """net.ipv4.tcp_keepalive_time/_intvl/_probes, or None if any is unknown."""
        ka = self.counters.keepalive
        return None if ka is None else HostKeepalive(*ka)

    @property
    def listen_overflows(self) -> int | None:
        """TcpExt ListenOverflows."""
        return self.counters.tcp_ext.get("ListenOverflows")

    @property
    def listen_drops(self) -> int | None:
        """TcpExt ListenDrops."""
        return self.counters.tcp_ext.get("ListenDrops")

    @property
    def ephemeral_ports(self) -> int | None:
        """How many local ports outgoing connections can use (size of ip_local_port_range)."""
        return self.counters.ephemeral_ports

    def as_dict(self) -> dict[str, object]:
        """Return the facts for JSON."""
        ka = self.keepalive
        return {
            "tcp_syncookies": self.tcp_syncookies,
            "tcp_max_syn_backlog": self.tcp_max_syn_backlog,
            "somaxconn": self.somaxconn,
            "ip_local_port_range": list(self.ip_local_port_range or ()) or None,
            "tcp_tw_reuse": self.tcp_tw_reuse,
            "keepalive": None if ka is None else [ka.idle, ka.interval, ka.count],
            "listen_overflows": self.listen_overflows,
            "listen_drops": self.listen_drops,
        }


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What ``diagnose()`` saw: state counts, host facts and the findings, worst first.

    ``netns``: the network namespace looked at, when not the caller's own.
    ``unseen`` says what it could not look at (the owners of other users' sockets, when not
    root): ``ok`` then only speaks for what was visible, and ``complete`` is False.
    ``interval``: the seconds between the two samples the time rules compared (None: one
    snapshot, no time rules). ``sample``: this moment's Sample (counts, listeners, host
    counters), to compare a later one with (``diagnose(earlier=d.sample)``).
    """

    findings: tuple[Finding, ...]
    counts: Mapping[TcpState, int]
    host: HostFacts
    port: int | None
    thresholds: Thresholds
    netns: NetNamespace | None = None
    unseen: tuple[Unseen, ...] = ()
    interval: float | None = None
    sample: Sample | None = None

    @property
    def total(self) -> int:
        """Sockets looked at."""
        return sum(self.counts.values())

    @property
    def problems(self) -> tuple[Finding, ...]:
        """Findings of severity WARNING or worse."""
        return tuple(f for f in self.findings if f.severity >= Severity.WARNING)

    @property
    def ok(self) -> bool:
        """True when nothing worse than INFO was found (in what was visible: see ``unseen``)."""
        return not self.problems

    @property
    def complete(self) -> bool:
        """True when the diagnosis saw everything it looked for (``unseen`` is empty)."""
        return not self.unseen

    def as_dict(self) -> dict[str, object]:
        """Return the diagnosis for JSON."""
        return {
            "ok": self.ok,
            "port": self.port,
            "interval": self.interval,
            "total": self.total,
            "counts": {s.label: n for s, n in self.counts.items()},
            "host": self.host.as_dict(),
            "findings": [f.as_dict() for f in self.findings],
            "netns": None if self.netns is None else self.netns.as_dict(),
            "complete": self.complete,
            "unseen": [u.as_dict() for u in self.unseen],
        }

    def render(self) -> str:
        """Return a report a person reads in ten seconds (see pysockopt.host.render)."""
        from .render import render_diagnosis

        return render_diagnosis(self)
