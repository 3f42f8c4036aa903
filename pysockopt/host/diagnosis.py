"""``diagnose()``: one look at every socket and the host facts, checked against RULES."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from types import MappingProxyType
from typing import Final

from .. import _host
from ..errors import InvalidConfigError
from ..tcpinfo import TcpState
from .connections import Connection, connections
from .look import FACT_SYSCTLS, facts_from
from .model import Diagnosis, HostFacts, Thresholds
from .namespaces import Entered, NetnsArg, opened, read_files, resolve
from .rules import RULES, Snapshot
from .sample import Sample, of_connections, read_counters, sample

__all__ = ["FACT_SYSCTLS", "diagnose", "facts_from", "host_facts"]

_SYSCTLS: Final = FACT_SYSCTLS


def _facts_in(target: Entered) -> tuple[dict[str, tuple[int, ...] | None],
                                        dict[str, int | None]]:
    """Return the sysctls and TcpExt counters of another namespace (one native thread there)."""
    texts = read_files(target, [*map(_host.sysctl_path, _SYSCTLS),
                                "/proc/thread-self/net/netstat"])
    for text in texts:
        if isinstance(text, OSError) and text.errno not in _host.ABSENT:
            raise text
    sysctls = {name: _host.parse_ints(text) if isinstance(text, bytes) else None
               for name, text in zip(_SYSCTLS, texts, strict=False)}
    netstat = texts[-1]
    tcp_ext = (_host.counter_table(netstat.decode("ascii", "replace"), "TcpExt")
               if isinstance(netstat, bytes) else {})
    return sysctls, tcp_ext


def host_facts(*, netns: NetnsArg = None) -> HostFacts:
    """Read the sysctls and counters the rules use (for the calling thread's namespace).

    ``netns``: another network namespace's, read from inside it (see ``connections``).
    """
    with opened(netns) as target:
        if target is None:
            sysctls = {name: _host.sysctl(name) for name in _SYSCTLS}
            tcp_ext = _host.netstat_counters("netstat", "TcpExt") or {}
        else:
            sysctls, tcp_ext = _facts_in(target)

    return facts_from(sysctls, tcp_ext)


def diagnose(*, port: int | None = None, thresholds: Thresholds | None = None,
             interval: float | None = None, earlier: Sample | None = None,
             netns: NetnsArg = None) -> Diagnosis:
    """Look at every TCP socket (those on ``port``, local or remote, if given) and report.

    One ``connections(with_info=True)`` snapshot and the host counters are checked against
    every rule in ``RULES``; owning processes are looked up only for the sockets a finding
    names. With ``interval`` (seconds), a first sample is taken, then after ``interval``
    the snapshot, and the rules that need time (growing CLOSE_WAIT, drops now, ports
    running out...) compare the two; ``earlier`` gives that first sample instead (taken
    with the same ``port`` and ``netns``; ``pysockopt watch`` passes its previous one).
    Findings come worst first. Sees the calling thread's network namespace, or ``netns``
    (as in ``connections``): the Diagnosis and each Finding then carry that NetNamespace.
    """
    t = Thresholds() if thresholds is None else thresholds
    if not isinstance(t, Thresholds):
        raise TypeError(f"thresholds must be a Thresholds, not {type(t).__name__}")
    if interval is not None and (isinstance(interval, bool)
                                 or not isinstance(interval, (int, float))
                                 or not math.isfinite(interval) or not 0 < interval <= 86400):
        raise InvalidConfigError("interval", interval, "seconds, > 0 and <= 86400, or None")
    if earlier is not None and not isinstance(earlier, Sample):
        raise TypeError(f"earlier must be a Sample, not {type(earlier).__name__}")
    ns = resolve(netns)
    if interval is not None and earlier is None:
        earlier = sample(port=port, netns=ns)
        time.sleep(max(0.0, earlier.time + interval - time.monotonic()))
    start, wall = time.monotonic(), time.time()
    conns = connections(port=port, with_info=True, netns=ns)
    by_state: dict[TcpState, list[Connection]] = defaultdict(list)
    for c in conns:
        by_state[c.state].append(c)
    now = of_connections(conns, read_counters(ns), port=port, start=start, wall=wall)
    rates = None if earlier is None else now.rates(earlier)
    snap = Snapshot(conns, by_state, host_facts(netns=ns), sample=now, rates=rates)
    findings = [f for rule in RULES for f in rule.check(rule, snap, t)]
    if ns is not None:
        findings = [dataclasses.replace(f, netns=ns) for f in findings]
    findings.sort(key=lambda f: -f.severity)  # stable: rule order within a severity
    counts = MappingProxyType({s: len(v) for s, v in sorted(by_state.items())})
    return Diagnosis(tuple(findings), counts, snap.host, port, t, netns=ns,
                     unseen=snap.owners.unseen(),
                     interval=None if rates is None else rates.seconds, sample=now)
