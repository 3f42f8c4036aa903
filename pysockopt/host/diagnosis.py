"""``diagnose()``: one look at every socket and the host facts, checked against RULES."""

from __future__ import annotations

import dataclasses
import math
import time
from types import MappingProxyType

from ..errors import InvalidConfigError
from .closed import CloseFeed
from .look import FACT_SYSCTLS, Look, Needs, facts_from, look, read_host, sockets_needed
from .model import Diagnosis, HostFacts, Thresholds
from .namespaces import NetnsArg, opened
from .sample import Sample

__all__ = ["FACT_SYSCTLS", "diagnose", "diagnosis_of", "facts_from", "host_facts"]


def host_facts(*, netns: NetnsArg = None) -> HostFacts:
    """Read the sysctls and counters the rules use (for the calling thread's namespace).

    ``netns``: another network namespace's, read from inside it (see ``connections``): the
    files a look reads, in one trip.
    """
    with opened(netns) as target:
        return read_host(target, [], strict=True)[2]


def diagnose(*, port: int | None = None, thresholds: Thresholds | None = None,
             interval: float | None = None, earlier: Sample | None = None,
             netns: NetnsArg = None) -> Diagnosis:
    """Look at every TCP socket (those on ``port``, local or remote, if given) and report.

    One look (``host/look.py``) is checked against every rule in ``RULES``: the sockets the
    rules pick are decoded (with tcp_info), the rest counted in C (ports in use per
    destination included); owning processes are looked up only for the sockets a finding
    names. With ``interval`` (seconds), a first sample is taken, then after ``interval`` the
    snapshot, and the rules that need time (growing CLOSE_WAIT, drops now, ports running
    out...) compare the two; ``earlier`` gives that first sample instead (taken with the same
    ``port`` and ``netns``; ``pysockopt watch`` passes its previous one). Findings come
    worst first. Sees the calling thread's network namespace, or ``netns`` (as in
    ``connections``): the Diagnosis and each Finding then carry that NetNamespace.
    With ``interval``, a closed-connection log follows the namespace over it, driven by the
    two looks (subscribed on the first's way in; no look of its own): the rules on closes
    (short-lived churn, peers dying, unacknowledged data) read what it counted.
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
    needs = Needs(sockets_needed(interval is not None or earlier is not None), port,
                  thresholds=t)
    if interval is not None and earlier is None:
        with CloseFeed(port=port) as feed:
            first = look(netns, dataclasses.replace(needs, with_info=False), feed=feed)
            earlier, netns = first.sample, first.netns
            # The wrapper waits (reading closes meanwhile); the rules compare the two looks.
            assert earlier is not None  # a look that is not the exporter's raises instead
            feed.wait(earlier.time + interval - time.monotonic())
            return diagnosis_of(look(netns, needs, feed=feed), t, earlier)
    return diagnosis_of(look(netns, needs), t, earlier)


def diagnosis_of(lk: Look, thresholds: Thresholds, earlier: Sample | None = None) -> Diagnosis:
    """Check one look against every rule in RULES (the time rules against ``earlier``).

    Findings come worst first, each carrying the look's namespace when it is not the
    caller's own.
    """
    assert lk.sample is not None and lk.counts is not None
    rates = None if earlier is None else lk.rates(earlier)
    findings = lk.findings(thresholds, rates)
    ns = lk.netns
    if ns is not None:
        findings = [dataclasses.replace(f, netns=ns) for f in findings]
    findings.sort(key=lambda f: -f.severity)  # stable: rule order within a severity
    counts = MappingProxyType({s: n for s, n in sorted(lk.counts.items()) if n})
    return Diagnosis(tuple(findings), counts, lk.facts, lk.needs.port, thresholds, netns=ns,
                     unseen=lk.owners.unseen(),
                     interval=None if rates is None else rates.seconds, sample=lk.sample)
