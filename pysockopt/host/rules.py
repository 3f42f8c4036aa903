"""The diagnosis rules, as data: what each looks for, means and advises, and its check.

Each ``Rule`` in ``RULES`` turns one snapshot of the sockets and the host facts into findings;
docs/diagnose.md is generated from this table (``python docs/generate.py``).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from .._format import count, duration, endpoint, printable, processes
from ..tcpinfo import TcpState
from .closed import CloseTotals
from .connections import Connection, Timer
from .model import Evidence, Finding, HostFacts, Severity, Thresholds
from .owners import OwnerBook, Process, user_label
from .sample import OwnerGrowth, Rates, Sample

__all__ = ["RULES", "OwnerBook", "Pick", "Rule", "Snapshot"]


# --- the snapshot rules look at


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the rules look at: the sockets, grouped by state, and the host facts.

    ``owners`` looks up the processes holding sockets and keeps what it could not see.
    ``sample``: this moment's Sample (the host counters the counter rules read); ``rates``:
    what changed since an earlier sample, for the rules that need an interval (None when
    diagnose was given none: those rules then find nothing). ``closes``: what the
    closed-connection log counted during that interval (None without a log).
    """

    conns: Sequence[Connection]
    by_state: Mapping[TcpState, Sequence[Connection]]
    host: HostFacts
    owners: OwnerBook = field(default_factory=OwnerBook)
    sample: Sample | None = None
    rates: Rates | None = None
    closes: CloseTotals | None = None

    def of(self, state: TcpState) -> Sequence[Connection]:
        """Return the sockets in ``state``."""
        return self.by_state.get(state, ())


#: Sockets shown in a finding and looked up for their processes.
_EXAMPLES: Final = 5


def _owners(snap: Snapshot, conns: Iterable[Connection]) -> tuple[Process, ...]:
    """Return the processes holding any of ``conns`` (one /proc walk, flagged sockets only)."""
    found = snap.owners.lookup([c for c in conns if c.inode][:256])
    return tuple(dict.fromkeys(p for procs in found.values() if procs for p in procs))


def _by_local_port(conns: Iterable[Connection]) -> dict[int, list[Connection]]:
    groups: dict[int, list[Connection]] = defaultdict(list)
    for c in conns:
        groups[c.local_port].append(c)
    return groups


def _listeners(snap: Snapshot) -> dict[int, list[Connection]]:
    return _by_local_port(snap.of(TcpState.LISTEN))


class Pick(NamedTuple):
    """Sockets a rule reads one by one; what it does not pick, it needs only counted.

    ``state``: the sockets' state (None: every socket, as the per-destination port counts
    need). ``pile``: a Thresholds field; the state's sockets are read only once there are at
    least that many (a smaller pile cannot fire). ``timer``, ``retrans`` (a Thresholds field:
    at least that many retransmits) and ``idle`` (a Thresholds field in seconds: each tcp_info
    field of ``info`` at least that many milliseconds) narrow the pick to the sockets that
    match; ``info``: the tcp_info fields the rule reads. ``grouped``: counted in C per local
    address and destination, the groups read instead of the sockets. The exporter's
    selection and the C tally's predicates are computed from these (host/look.py).
    """

    state: TcpState | None
    pile: str | None = None
    timer: Timer | None = None
    retrans: str | None = None
    idle: str | None = None
    info: tuple[str, ...] = ()
    grouped: bool = False

    def describe(self) -> str:
        """Say what it reads, for the docs: ``SYN_RECV once there are `syn_recv` ``..."""
        what = "every socket" if self.state is None else self.state.label
        if self.grouped:
            return (f"{what} counted per local address and destination"
                    + (" (ports in use)" if self.state is None else ""))
        parts = [what]
        if self.timer is not None:
            parts.append(f"with the {self.timer.name.lower().replace('_', ' ')} timer"
                         if self.timer != Timer.NONE
                         else "with no timer")
        if self.retrans is not None:
            parts.append(f"retransmitted at least `{self.retrans}` times")
        if self.idle is not None:
            parts.append(f"silent for `{self.idle}`")
        if self.pile is not None:
            parts.append(f"once there are `{self.pile}`")
        if self.info:
            parts.append("(tcp_info " + ", ".join(self.info) + ")")
        return " ".join(parts)


#: Every listener: dumped on their own, always read.
_LISTENERS: Final = Pick(TcpState.LISTEN)


# --- the rules


@dataclass(frozen=True, slots=True)
class Rule:
    """One diagnosis rule, as data.

    What it looks for (``looks_for``), what that usually means, the ``Thresholds`` field that
    sets it off, and what to do; ``check`` produces its findings from a snapshot.
    ``interval``: the rule compares two samples (``diagnose(interval=...)``, ``pysockopt
    watch``) and finds nothing in a single snapshot. ``picks``: the sockets it reads one by
    one (none: it reads only counts, counters and sysctls); the one place its data needs are
    written. ``closes``: it reads the closes a closed-connection log counted over the interval
    (``Look.closes``: diagnose --interval, watch, the exporter from its second scrape).
    """

    code: str
    severity: Severity
    title: str
    looks_for: str
    meaning: str
    advice: str
    threshold: str | None
    check: Callable[[Rule, Snapshot, Thresholds], Iterable[Finding]]
    interval: bool = False
    picks: tuple[Pick, ...] = ()
    closes: bool = False

    def finding(self, summary: str, evidence: Iterable[tuple[str, int | float | str]], *,
                severity: Severity | None = None, port: int | None = None,
                sockets: Sequence[Connection] = (), processes: tuple[Process, ...] = (),
                advice: str | None = None) -> Finding:
        """Return a Finding of this rule."""
        return Finding(self.code, self.severity if severity is None else severity, summary,
                       tuple(Evidence(n, v) for n, v in evidence),
                       self.advice if advice is None else advice, port,
                       _examples(sockets), processes)


def _examples(sockets: Sequence[Connection]) -> tuple[Connection, ...]:
    # Distinct ones: a TIME_WAIT group counted in C comes as one record repeated.
    return tuple(dict.fromkeys(itertools.islice(sockets, 256)))[:_EXAMPLES]


def _syn_recv(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    listeners = _listeners(snap)
    host = snap.host
    for port, conns in sorted(_by_local_port(snap.of(TcpState.SYN_RECV)).items()):
        if len(conns) < t.syn_recv:
            continue
        backlog = max((c.backlog or 0 for c in listeners.get(port, ())), default=0)
        sources = len({c.remote_address for c in conns})
        full = bool(backlog) and len(conns) >= backlog
        evidence: list[tuple[str, int | float | str]] = [
            ("syn_recv", len(conns)), ("remote_addresses", sources),
            ("synack_retransmits_max", max(c.retrans for c in conns))]
        if backlog:
            evidence.append(("backlog", backlog))
        evidence += [("tcp_syncookies", _show(host.tcp_syncookies)),
                     ("tcp_max_syn_backlog", _show(host.tcp_max_syn_backlog))]
        advice = rule.advice
        if host.tcp_syncookies == 0:
            advice = ("tcp_syncookies is 0: set net.ipv4.tcp_syncookies=1 so a full SYN queue "
                      "still lets real clients in. " + advice)
        yield rule.finding(
            f"{count(len(conns), 'half-open handshake')} (SYN_RECV) on port {port} from "
            f"{count(sources, 'address', 'addresses')}"
            + (", the SYN queue is full" if full else ""),
            evidence, port=port, sockets=conns, advice=advice,
            severity=Severity.CRITICAL if full else None)


def _accept_queue(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    for c in snap.of(TcpState.LISTEN):
        backlog = c.backlog
        # listen(0) is a backlog of 0 that still queues one connection: full at 1.
        if backlog is None or not c.rqueue or c.rqueue < backlog * t.accept_queue_ratio:
            continue
        evidence: list[tuple[str, int | float | str]] = [
            ("accept_queue", c.rqueue), ("backlog", backlog)]
        if c.drops is not None:
            evidence.append(("drops", c.drops))
        evidence.append(("somaxconn", _show(snap.host.somaxconn)))
        yield rule.finding(
            f"listener {c.local} has {count(c.rqueue, 'connection')} waiting for accept() "
            f"(backlog {backlog}): the application is not accepting",
            evidence, port=c.local_port, sockets=[c], processes=_owners(snap, [c]),
            severity=Severity.CRITICAL if c.rqueue >= backlog else Severity.WARNING)


def _listen_drops(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    # The socket's drop count is cumulative since it started listening: on its own it says
    # nothing about now. Only drops during an interval, or a queue full now, are a warning.
    host = snap.host
    during = {} if snap.rates is None else {d.listener.inode: d for d in snap.rates.listeners}
    host_drops = None if snap.rates is None else snap.rates.counter("TcpExt.ListenDrops")
    for c in snap.of(TcpState.LISTEN):
        if c.drops is None:
            continue
        full = bool(c.rqueue) and c.backlog is not None and c.rqueue >= c.backlog
        evidence: list[tuple[str, int | float | str]] = [
            ("drops", c.drops), ("accept_queue", c.rqueue),
            ("backlog", _show(c.backlog)),
            ("host_listen_overflows", _show(host.listen_overflows)),
            ("host_listen_drops", _show(host.listen_drops))]
        d = during.get(c.inode)
        if snap.rates is not None and d is not None and d.drops >= t.listen_drops:
            seconds = snap.rates.seconds
            evidence[:0] = [("drops_during", d.drops),
                            ("drops_per_second", round(d.per_second, 2)),
                            ("interval_s", round(seconds, 1))]
            if d.restarted:
                evidence.append(("listener_restarted", "yes"))
            if host_drops is not None:
                evidence.append(("host_listen_drops_during", host_drops.delta))
            yield rule.finding(
                f"listener {c.local} dropped {d.drops} connection attempts in the last "
                f"{_secs(seconds)} ({_rate(d.per_second)}): its queue is full now",
                evidence, port=c.local_port, sockets=[c], processes=_owners(snap, [c]))
        elif c.drops >= t.listen_drops:
            if snap.rates is not None:
                when = f", none in the last {_secs(snap.rates.seconds)}"
            else:
                when = ", and its accept queue is full now" if full else ""
            yield rule.finding(
                f"listener {c.local} dropped {c.drops} connection attempts since the "
                f"listener started{when}",
                evidence, port=c.local_port, sockets=[c],
                severity=Severity.WARNING if full and snap.rates is None else Severity.INFO)


def _who(procs: Sequence[Process], hidden_uids: Sequence[int] = ()) -> str:
    """`` in cmd (pid N), ...`` naming up to three processes, or "" when none is known.

    ``hidden_uids``: the uids of sockets whose owners were not visible, said as such.
    """
    text = f" in {processes(procs, most=3)}" if procs else ""
    if hidden_uids:
        uids = ", ".join(user_label(u) for u in sorted(set(hidden_uids)))
        text += f" {'and' if procs else 'held by'} {uids} (processes not visible)"
    return text


#: States whose Recv-Q counts the peer's FIN (one sequence number) until the application has
#: read past it: Recv-Q 1 on a CLOSE_WAIT socket is no data at all.
_FIN_RECEIVED: Final = frozenset({TcpState.CLOSE_WAIT, TcpState.LAST_ACK, TcpState.CLOSING})


def _queues(state: TcpState, conns: Sequence[Connection]) -> list[tuple[str, int | float | str]]:
    """Evidence on what the sockets hold: data never read, data never acknowledged."""
    if state not in _FIN_RECEIVED:
        return [("unread_bytes", sum(c.rqueue for c in conns)),
                ("unsent_bytes", sum(c.wqueue or 0 for c in conns))]
    # Recv-Q is rcv_nxt - copied_seq: the data not read, plus 1 for the FIN until a read
    # goes past it. Recv-Q 0: everything up to the end of stream was read, and still the
    # application did not close (the classic leak: recv() returned b"" and was ignored).
    return [("unread_bytes", sum(max(c.rqueue - 1, 0) for c in conns)),
            ("read_to_end", sum(1 for c in conns if c.rqueue == 0)),
            ("unsent_bytes", sum(c.wqueue or 0 for c in conns))]


def _pile(state: TcpState, limit: str) -> Callable[[Rule, Snapshot, Thresholds],
                                                    Iterable[Finding]]:
    """Return a rule body for "too many sockets in ``state``" in one group.

    A socket on a port that has a listener is the server's: grouped by that local port.
    Any other is a client's, on an ephemeral port of its own, so one leak per port never
    adds up there: grouped by remote endpoint, and what is left, by the process holding it
    (one /proc walk, only when those sockets together reach the threshold). A socket whose
    owner is not visible (another user's, when not root) is grouped by its uid, which the
    kernel tells everyone. Orphans (no process) that are left are grouped by local port,
    as on the server side.
    """

    def check(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
        threshold = getattr(t, limit)
        conns_in_state = snap.of(state)
        if len(conns_in_state) < threshold:
            return
        listening = {c.local_port for c in snap.of(TcpState.LISTEN)}
        on_port: dict[int, list[Connection]] = defaultdict(list)
        to_peer: dict[tuple[socket.AddressFamily, str, int], list[Connection]] = (
            defaultdict(list))
        for c in conns_in_state:
            if c.local_port in listening:
                on_port[c.local_port].append(c)
            else:
                to_peer[(c.family, c.remote_address, c.remote_port)].append(c)

        def found(conns: Sequence[Connection], where: str, grouped_by: str,
                  port: int | None, procs: tuple[Process, ...] | None = None,
                  extra: Sequence[tuple[str, int | float | str]] = (),
                  hidden: Sequence[int] = ()) -> Finding:
            if procs is None:  # look up who holds them
                owners = snap.owners.lookup(conns[:256])
                procs = tuple(dict.fromkeys(p for ps in owners.values() if ps for p in ps))
                hidden = [c.uid for c in conns[:256] if c.inode and owners[c.inode] is None]
            peers = Counter(c.remote_address for c in conns)
            evidence: list[tuple[str, int | float | str]] = [
                (state.label.lower(), len(conns)), ("grouped_by", grouped_by), *extra,
                ("remote_addresses", len(peers)), *_queues(state, conns)]
            return rule.finding(
                f"{count(len(conns), state.label + ' socket')} {where}{_who(procs, hidden)}",
                evidence, port=port, sockets=conns, processes=procs,
                severity=Severity.CRITICAL if len(conns) >= 10 * threshold else None)

        left: list[Connection] = []
        for port, conns in sorted(on_port.items()):
            if len(conns) >= threshold:
                yield found(conns, f"on local port {port}", "listening port", port)
            else:
                left += conns  # a listener's few, but maybe part of one process's many
        for (family, address, rport), conns in sorted(to_peer.items()):
            if len(conns) >= threshold:
                yield found(conns, f"to {endpoint(family, address, rport)}", "remote endpoint",
                            None)
            else:
                left += conns
        if len(left) < threshold:
            return
        owners = snap.owners.lookup(left)
        by_owner: dict[tuple[Process, ...], list[Connection]] = defaultdict(list)
        by_uid: dict[int, list[Connection]] = defaultdict(list)
        orphans: dict[int, list[Connection]] = defaultdict(list)
        for c in left:
            procs = owners[c.inode] if c.inode else ()
            if procs:
                by_owner[procs].append(c)
            elif procs is None:
                by_uid[c.uid].append(c)
            elif c.local_port not in on_port:  # a listener's were counted above
                orphans[c.local_port].append(c)

        def endpoints(conns: Sequence[Connection]) -> str:
            return count(len({(c.remote_address, c.remote_port) for c in conns}),
                         "remote endpoint")

        for procs, conns in sorted(by_owner.items(), key=lambda kv: -len(kv[1])):
            if len(conns) >= threshold:
                yield found(conns, f"to {endpoints(conns)}", "process", None, procs)
        for uid, conns in sorted(by_uid.items()):
            if len(conns) >= threshold:
                yield found(conns, f"to {endpoints(conns)}", "uid (owner not visible)", None,
                            (), [("uid", uid)], [uid])
        for port, conns in sorted(orphans.items()):
            if len(conns) >= threshold:
                yield found(conns, f"on local port {port}", "local port (no process)", port,
                            ())

    return check


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _tw_reuse_applies(tw_reuse: int | None, local: str, remote: str) -> bool:
    """Whether net.ipv4.tcp_tw_reuse lets a new connect() take these TIME_WAIT ports.

    1: for every connection; 2 (the default): when either end is a loopback address.
    Either way only with TCP timestamps, which loopback always negotiates.
    """
    return tw_reuse == 1 or (tw_reuse == 2 and (_is_loopback(local) or _is_loopback(remote)))


def _time_wait(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    host = snap.host
    size = host.ephemeral_ports
    if not size or host.ip_local_port_range is None:
        return
    low, high = host.ip_local_port_range
    # Only TIME_WAIT on an ephemeral local port uses up the range; a server that closes
    # first keeps its TIME_WAIT on its listening port, which costs no port. A connect()
    # needs a port free for its own (local address, remote endpoint): each local address
    # has the whole range to itself.
    per_pair: dict[tuple[socket.AddressFamily, str, str, int], list[Connection]] = (
        defaultdict(list))
    for c in snap.of(TcpState.TIME_WAIT):
        if low <= c.local_port <= high:
            per_pair[(c.family, c.local_address, c.remote_address, c.remote_port)].append(c)
    for (family, local, address, port), conns in sorted(per_pair.items(),
                                                        key=lambda kv: -len(kv[1])):
        ratio = len(conns) / size
        if ratio < t.time_wait_ratio:
            continue
        reuse = _tw_reuse_applies(host.tcp_tw_reuse, local, address)
        severity = (Severity.INFO if reuse
                    else Severity.CRITICAL if ratio >= 0.9 else None)
        summary = (f"{len(conns)} TIME_WAIT sockets from {local} to "
                   f"{endpoint(family, address, port)} hold {ratio:.0%} of the "
                   f"{size} ephemeral ports")
        if reuse:
            summary += (f" (tcp_tw_reuse={host.tcp_tw_reuse} lets new connections "
                        "reuse them)")
        yield rule.finding(
            summary,
            [("time_wait", len(conns)), ("ephemeral_ports", size),
             ("ratio", round(ratio, 3)), ("ip_local_port_range", f"{low}-{high}"),
             ("local_address", local), ("tcp_tw_reuse", _show(host.tcp_tw_reuse)),
             ("tw_reuse_applies", "yes" if reuse else "no")],
            port=None, sockets=conns, severity=severity)


def _retransmitting(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    per_peer: dict[str, list[Connection]] = defaultdict(list)
    for c in snap.of(TcpState.ESTABLISHED):
        if c.timer == Timer.RETRANSMIT and c.retrans >= t.retrans:
            per_peer[c.remote_address].append(c)
    for address, conns in sorted(per_peer.items()):
        worst = max(conns, key=lambda c: c.retrans)
        evidence: list[tuple[str, int | float | str]] = [
            ("connections", len(conns)), ("retrans_max", worst.retrans),
            ("next_retransmit_ms", worst.expires_ms),
            ("unacked_bytes", sum(c.wqueue or 0 for c in conns))]
        if worst.info is not None and worst.info.last_ack_recv is not None:
            evidence.append(("last_ack_recv_ms", worst.info.last_ack_recv))
        yield rule.finding(
            f"{count(len(conns), 'connection')} to {address} retransmitting "
            f"({count(worst.retrans, 'time')} in a row): the peer does not answer",
            evidence, port=worst.local_port, sockets=conns, processes=_owners(snap, conns))


def _idle_no_keepalive(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    limit_ms = t.idle_seconds * 1000
    suspects: list[Connection] = []
    for c in snap.of(TcpState.ESTABLISHED):
        info = c.info
        # No timer at all: no keepalive armed and nothing in flight.
        if c.timer != Timer.NONE or info is None:
            continue
        recv, ack = info.last_data_recv, info.last_ack_recv
        if recv is not None and ack is not None and min(recv, ack) >= limit_ms:
            suspects.append(c)
    if not suspects:
        return
    ports = Counter(c.local_port for c in suspects)
    port, _ = ports.most_common(1)[0]
    ka = snap.host.keepalive
    evidence: list[tuple[str, int | float | str]] = [
        ("connections", len(suspects)), ("idle_seconds_min", t.idle_seconds),
        ("top_local_port", port), ("on_top_port", ports[port])]
    if ka is not None:
        evidence.append(("host_keepalive_detection_s", ka.detection_time))
    yield rule.finding(
        f"{count(len(suspects), 'ESTABLISHED connection')} silent for over "
        f"{t.idle_seconds} s with no keepalive: half-open suspects",
        evidence, port=port if len(ports) == 1 else None, sockets=suspects,
        processes=_owners(snap, suspects))


def _keepalive_defaults(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    ka = snap.host.keepalive
    if ka is None or not ka.is_linux_default:
        return
    yield rule.finding(
        f"host keepalive is Linux's default {ka.idle}/{ka.interval}/{ka.count}: a dead peer "
        f"goes unnoticed for {ka.detection_time // 60} min",
        [("tcp_keepalive_time", ka.idle), ("tcp_keepalive_intvl", ka.interval),
         ("tcp_keepalive_probes", ka.count), ("detection_s", ka.detection_time)])


# --- rules that need an interval (two samples)


def _secs(seconds: float) -> str:
    """Write an interval as people say it: ``0.5 s``, ``1.0 s``, ``10 s``."""
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _eta(seconds: float) -> str:
    """Write a time left roughly: ``81 s`` under two minutes, ``12 min``, ``3 h 5 min``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return duration(round(seconds / 60) * 60)


def _rate(per_second: float) -> str:
    """``12/s``, ``0.5/s``, or per minute below one every ten seconds (``3/min``)."""
    if per_second >= 10:
        return f"{per_second:,.0f}/s"
    if per_second >= 0.1:
        return f"{per_second:.2g}/s"
    return f"{per_second * 60:.2g}/min"


def _close_wait_growing(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    r = snap.rates
    if r is None:
        return
    reported: Counter[int] = Counter()
    groups = [g for g in r.close_wait if g.port is not None or g.remote is not None]
    per_uid = [g for g in r.close_wait if g.port is None and g.remote is None]
    for g in sorted(groups, key=lambda g: -g.delta):
        if g.delta < t.close_wait_growth or not g.new:
            continue
        reported[g.uid] += g.delta
        where = (f"on local port {g.port}" if g.port is not None
                 else f"to {printable(g.remote or '')}")
        yield _growth_finding(rule, snap, g, where,
                              "listening port" if g.port is not None else "remote endpoint")
    for g in per_uid:
        rest = g.delta - reported[g.uid]
        if rest >= t.close_wait_growth and g.new:
            peers = len({(c.remote_address, c.remote_port) for c in g.new})
            yield _growth_finding(rule, snap, g, f"of uid {g.uid} to {peers} remote endpoints",
                                  "uid")


def _growth_finding(rule: Rule, snap: Snapshot, g: OwnerGrowth, where: str,
                    grouped_by: str) -> Finding:
    procs = _owners(snap, g.new)
    return rule.finding(
        f"CLOSE_WAIT sockets {where} grow by {_rate(g.per_second)} ({g.before} -> {g.now} "
        f"in {_secs(g.seconds)}){_who(procs)}: a socket leak",
        [("close_wait_growth", g.delta), ("per_second", round(g.per_second, 3)),
         ("close_wait_before", g.before), ("close_wait_now", g.now), ("new", len(g.new)),
         ("closed", g.gone),
         ("interval_s", round(g.seconds, 1)), ("uid", g.uid), ("grouped_by", grouped_by)],
        port=g.port, sockets=g.new, processes=procs)


def _port_exhaustion(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    r = snap.rates
    if r is None:
        return
    counters = r.later.counters
    size = counters.ephemeral_ports
    if not size or counters.ip_local_port_range is None:
        return
    low, high = counters.ip_local_port_range
    for p in r.ports:
        if p.per_second <= 0:
            break  # sorted fastest first
        free = max(size - p.now, 0)
        eta = free / p.per_second
        if eta > t.port_exhaustion_seconds:
            continue
        d = p.destination
        reuse = _tw_reuse_applies(counters.tcp_tw_reuse, d.local_address, d.remote_address)
        severity = (Severity.INFO if reuse
                    else Severity.CRITICAL if eta <= 60 else Severity.WARNING)
        pace = f"{p.per_second:,.0f}" if p.per_second >= 10 else f"{p.per_second:.2g}"
        summary = (f"at {pace} new connections/s to "
                   f"{d.remote} the {size:,} ephemeral ports of {d.local_address} run out "
                   f"in ~{_eta(eta)} ({p.now:,} in use)")
        if reuse:
            summary += f" unless tcp_tw_reuse={counters.tcp_tw_reuse} recycles TIME_WAIT ports"
        yield rule.finding(
            summary,
            [("ports_per_second", round(p.per_second, 1)), ("eta_s", round(eta, 1)),
             ("in_use", p.now), ("in_use_before", p.before), ("time_wait", p.time_wait),
             ("ephemeral_ports", size), ("ip_local_port_range", f"{low}-{high}"),
             ("interval_s", round(r.seconds, 1)), ("local_address", d.local_address),
             ("tcp_tw_reuse", _show(counters.tcp_tw_reuse)),
             ("tw_reuse_applies", "yes" if reuse else "no")],
            severity=severity)


#: Fewer retransmitted segments than this in an interval is noise, whatever the ratio.
_MIN_RETRANS: Final = 10


def _retransmits_rising(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    r = snap.rates
    if r is None:
        return
    retrans, out = r.counter("Tcp.RetransSegs"), r.counter("Tcp.OutSegs")
    if retrans is None or out is None or not out.delta or retrans.delta < _MIN_RETRANS:
        return
    ratio = retrans.delta / out.delta
    if ratio < t.retrans_ratio:
        return
    evidence: list[tuple[str, int | float | str]] = [
        ("retrans_segs", retrans.delta), ("out_segs", out.delta), ("ratio", round(ratio, 4)),
        ("retrans_per_second", round(retrans.per_second, 1)),
        ("interval_s", round(r.seconds, 1))]
    for name in ("TcpExt.TCPTimeouts", "TcpExt.TCPSynRetrans"):
        change = r.counter(name)
        if change is not None:
            evidence.append((name.split(".")[1], change.delta))
    yield rule.finding(
        f"{ratio:.1%} of the segments sent in the last {_secs(r.seconds)} were "
        f"retransmissions ({retrans.delta:,}, {_rate(retrans.per_second)})", evidence,
        severity=Severity.CRITICAL if ratio >= 10 * t.retrans_ratio else None)


def _syn_flood_now(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    r = snap.rates
    if r is None:
        return
    cookies = r.counter("TcpExt.SyncookiesSent")
    full = r.counter("TcpExt.TCPReqQFullDrop")
    extra: list[tuple[str, int | float | str]] = [
        ("syncookies_sent", "unknown" if cookies is None else cookies.delta),
        ("syn_queue_full_drops", "unknown" if full is None else full.delta),
        ("interval_s", round(r.seconds, 1))]
    severity = Severity.CRITICAL if full is not None and full.delta else None
    found = False
    for port, change in sorted(r.syn_recv.items(), key=lambda kv: -kv[1].delta):
        if change.delta < t.syn_recv_growth:
            break
        found = True
        now = r.later.syn_recv.get(port, 0) if r.later.syn_recv is not None else 0
        yield rule.finding(
            f"SYN_RECV on port {port} grows by {_rate(change.per_second)} ({now} now): a "
            f"SYN flood or a burst of clients that do not finish the handshake",
            [("syn_recv_growth", change.delta), ("per_second", round(change.per_second, 1)),
             ("syn_recv", now), *extra], port=port, severity=severity)
    if not found and cookies is not None and cookies.delta:
        yield rule.finding(
            f"the kernel sent {cookies.delta:,} SYN cookies in the last {_secs(r.seconds)} "
            f"({_rate(cookies.per_second)}): a listener's SYN queue is overflowing",
            extra, severity=severity)


def _aborts(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    r = snap.rates
    if r is None:
        return
    timeout = r.counter("TcpExt.TCPAbortOnTimeout")
    data = r.counter("TcpExt.TCPAbortOnData")
    total = (timeout.delta if timeout else 0) + (data.delta if data else 0)
    if total < t.aborts:
        return
    evidence: list[tuple[str, int | float | str]] = [("aborted", total),
                                                      ("per_second", round(total / r.seconds, 2))]
    for name in ("TCPAbortOnTimeout", "TCPAbortOnData", "TCPAbortOnClose", "TCPAbortOnMemory",
                 "TCPAbortOnLinger"):
        change = r.counter(f"TcpExt.{name}")
        evidence.append((name, "unknown" if change is None else change.delta))
    evidence.append(("interval_s", round(r.seconds, 1)))
    timeouts = bool(timeout and timeout.delta * 2 >= total)
    why = ("timed out (peers gone: retransmissions, keepalive or TCP_USER_TIMEOUT gave up)"
           if timeouts else "reset because data arrived after close()")
    # Resets on data after close() are routine for some protocols (clients that pipeline
    # past a server's close): worth knowing, not a warning on their own.
    yield rule.finding(
        f"{total:,} connections aborted in the last {_secs(r.seconds)} "
        f"({_rate(total / r.seconds)}), mostly {why}", evidence,
        severity=None if timeouts else Severity.INFO)


# --- rules on the closes of the interval (the closed-connection log)


def _over(snap: Snapshot) -> str:
    return "" if snap.rates is None else f" in the last {_secs(snap.rates.seconds)}"


def _interval(snap: Snapshot) -> list[tuple[str, int | float | str]]:
    return [] if snap.rates is None else [("interval_s", round(snap.rates.seconds, 1))]


def _live_owner(snap: Snapshot, *, remote: str | None = None, port: int | None = None) -> str:
    """Return the command holding the look's sockets to ``remote`` (on ``port``), or unknown.

    A closed socket's holder cannot be looked up after the fact: where a rule on closes
    fires without one, the look's sockets of the same destination or port name it (one
    lookup through the look's OwnerBook, only then).
    """
    live = [c for c in snap.conns if c.inode and (
        c.remote_address == remote if port is None else port in (c.local_port, c.remote_port))]
    found = snap.owners.lookup(live[:64])
    commands = sorted({p.command for procs in found.values() if procs for p in procs})
    return commands[0] if commands else "unknown"


def _short_lived(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    c = snap.closes
    if c is None:
        return
    for (remote, owner), n in sorted(c.short_lived.items(), key=lambda kv: -kv[1]):
        if n < t.short_lived:
            break
        if remote == "other":
            continue  # the overflow of many destinations: no one destination to name
        # No look saw these connections, so no lookup named their holder; the look's live
        # sockets to the same address may be another process's: "unknown" is said plainly.
        who = "an unknown process" if owner == "unknown" else owner
        yield rule.finding(
            printable(f"{n:,} connections to {remote} by {who} opened and closed between "
                      f"two looks{_over(snap)}: pool them"),
            [("short_lived", n), ("remote_address", remote), ("owner", owner),
             *_interval(snap)])


def _peers_dying(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    c = snap.closes
    if c is None:
        return
    for remote, n in sorted(c.gave_up_by_remote.items(), key=lambda kv: -kv[1]):
        if n < t.peers_dying or remote == "other":
            continue
        yield rule.finding(
            printable(f"{n:,} connections to {remote} given up on{_over(snap)} (keepalive, "
                      f"user timeout or retransmissions ran out): the peer is dying"),
            [("gave_up", n), ("remote_address", remote), *_interval(snap)])


def _unacked_closes(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    c = snap.closes
    if c is None:
        return
    for (port, owner), n in sorted(c.unacked_by_port_owner.items(), key=lambda kv: -kv[1]):
        if n < t.unacked_closes:
            continue
        where = "other ports" if port == "other" else f"port {port}"
        if owner == "unknown" and port.isdigit():
            owner = _live_owner(snap, port=int(port))
        who = "" if owner in ("unknown", "other") else f" held by {owner}"
        yield rule.finding(
            printable(f"{n:,} connections on {where}{who} closed with data never "
                      f"acknowledged{_over(snap)}"),
            [("unacked_closes", n), ("port", port), ("owner", owner), *_interval(snap)],
            port=int(port) if port.isdigit() else None)


# --- snapshot rules from the host counters


def _ratio_rule(rule: Rule, label: str, value: int | None, limit: int | None, threshold: float,
                critical: float, evidence: Sequence[tuple[str, int | float | str]],
                what: str) -> Iterable[Finding]:
    if value is None or not limit:
        return
    ratio = value / limit
    if ratio < threshold:
        return
    yield rule.finding(
        f"{value:,} {what} are {ratio:.0%} of {label} ({limit:,})",
        [*evidence, ("ratio", round(ratio, 3))],
        severity=Severity.CRITICAL if ratio >= critical else None)


def _orphan_pressure(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    if snap.sample is None:
        return
    c = snap.sample.counters
    orphans = c.sockstat.get("orphan")
    yield from _ratio_rule(
        rule, "net.ipv4.tcp_max_orphans", orphans, c.tcp_max_orphans, t.orphan_ratio, 0.9,
        [("orphans", _show(orphans)), ("tcp_max_orphans", _show(c.tcp_max_orphans))],
        "orphaned sockets (closed by their process, still in the kernel)")


def _tcp_memory(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    if snap.sample is None:
        return
    c = snap.sample.counters
    if c.tcp_mem is None:
        return
    mem = c.sockstat.get("mem")
    low, pressure, high = c.tcp_mem
    evidence: list[tuple[str, int | float | str]] = [
        ("mem_pages", _show(mem)), ("tcp_mem", f"{low} {pressure} {high}")]
    if snap.rates is not None:
        change = snap.rates.counter("TcpExt.TCPMemoryPressures")
        if change is not None:
            evidence.append(("memory_pressures_during", change.delta))
    if mem is None or mem < pressure * t.tcp_mem_ratio:
        return
    state = ("over the hard limit: new sends and receives fail" if mem >= high
             else "the kernel is in memory pressure mode" if mem >= pressure
             else "close to the pressure mark")
    yield rule.finding(
        f"TCP uses {mem:,} pages of memory, {mem / pressure:.0%} of tcp_mem's pressure "
        f"value {pressure:,}: {state}", evidence,
        severity=Severity.CRITICAL if mem >= high else None)


def _conntrack(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    if snap.sample is None:
        return
    c = snap.sample.counters
    yield from _ratio_rule(
        rule, "net.netfilter.nf_conntrack_max", c.conntrack_count, c.conntrack_max,
        t.conntrack_ratio, 0.95,
        [("nf_conntrack_count", _show(c.conntrack_count)),
         ("nf_conntrack_max", _show(c.conntrack_max))],
        "tracked connections")


def _time_wait_buckets(rule: Rule, snap: Snapshot, t: Thresholds) -> Iterable[Finding]:
    if snap.sample is None:
        return
    c = snap.sample.counters
    tw = c.sockstat.get("tw")
    evidence: list[tuple[str, int | float | str]] = [
        ("time_wait", _show(tw)), ("tcp_max_tw_buckets", _show(c.tcp_max_tw_buckets))]
    if snap.rates is not None:
        change = snap.rates.counter("TcpExt.TCPTimeWaitOverflow")
        if change is not None:
            evidence.append(("time_wait_overflow_during", change.delta))
    yield from _ratio_rule(
        rule, "net.ipv4.tcp_max_tw_buckets", tw, c.tcp_max_tw_buckets,
        t.time_wait_buckets_ratio, 1.0, evidence, "TIME_WAIT sockets")


_PILE_GROUPS: Final = (
    "Sockets on a port with a listener are grouped by that port (server side); the others, "
    "each on an ephemeral port of its own (client side), by remote endpoint, and those left "
    "by owning process (by uid where the owner is not visible, e.g. another user's when not "
    "root; orphans no process holds: by local port), so a client leaking one socket per "
    "connection is found too.")

RULES: Final[tuple[Rule, ...]] = (
    Rule("SYN_RECV_PILE", Severity.WARNING, "SYN_RECV pile per listener",
         "At least `syn_recv` SYN_RECV entries on one listening port; CRITICAL once "
         "they fill the listener's backlog.",
         "Handshakes the server answered with SYN+ACK that were never completed: a SYN "
         "flood (spoofed sources, many distinct addresses), or clients on a path that loses "
         "the final ACK. The kernel resends SYN+ACK for 30 s to over a minute.",
         "Keep net.ipv4.tcp_syncookies=1 (then a full SYN queue costs nothing); for a flood, "
         "filter upstream; for slow clients, a larger listen backlog and "
         "net.ipv4.tcp_max_syn_backlog.",
         "syn_recv", _syn_recv, picks=(_LISTENERS, Pick(TcpState.SYN_RECV, "syn_recv"))),
    Rule("ACCEPT_QUEUE_FULL", Severity.CRITICAL, "Listener accept queue at its backlog",
         "A LISTEN socket with connections waiting whose accept queue (Recv-Q) is at least "
         "`accept_queue_ratio` times its backlog (Send-Q); WARNING below 1.0, CRITICAL at "
         "or over it (listen(0) is full with one connection waiting).",
         "The kernel completes handshakes by itself; accept() only takes them off the queue. "
         "A full queue means the application stopped accepting or is too slow: new clients "
         "hang in SYN_SENT while their SYNs are dropped.",
         "Find why the process does not call accept() (blocked event loop, exhausted worker "
         "pool, deadlock); raise listen(backlog) and net.core.somaxconn only for bursts.",
         "accept_queue_ratio", _accept_queue, picks=(_LISTENERS,)),
    Rule("LISTEN_DROPS", Severity.WARNING, "Listener dropped connection attempts",
         "A LISTEN socket whose drop count (sock_diag SKMEMINFO, what `ss -tm` shows as d) "
         "grew by at least `listen_drops` during the interval (with two samples). The count "
         "is cumulative since the socket started listening, so on its own (one snapshot, "
         "or no drops during the interval) it is INFO, \"since the listener started\", "
         "unless the accept queue is full now. A listener restarted in between (another "
         "socket) counts from zero. TcpExt ListenOverflows/ListenDrops for the host.",
         "SYNs or final ACKs arrived while the accept queue was full and were thrown away; "
         "clients retried after a second or more, or gave up.",
         "Same causes as a full accept queue: accept faster, or size the backlog for bursts.",
         "listen_drops", _listen_drops, picks=(_LISTENERS,)),
    Rule("CLOSE_WAIT_PILE", Severity.WARNING, "CLOSE_WAIT pile",
         "At least `close_wait` CLOSE_WAIT sockets in one group; CRITICAL at ten times "
         "that. " + _PILE_GROUPS + " Names the processes holding them.",
         "The peer closed its side (FIN) and our application never called close(): almost "
         "always a socket leak, e.g. not closing after recv() returned 0 or on an error path.",
         "Fix the application to close sockets on EOF and on every error path; the pile "
         "grows until the process runs out of descriptors (EMFILE).",
         "close_wait", _pile(TcpState.CLOSE_WAIT, "close_wait"),
         picks=(_LISTENERS, Pick(TcpState.CLOSE_WAIT, "close_wait"))),
    Rule("TIME_WAIT_PRESSURE", Severity.WARNING, "TIME_WAIT pressure on ephemeral ports",
         "TIME_WAIT sockets on ephemeral local ports from one local address to one remote "
         "endpoint (each local address has the whole range to itself), at least "
         "`time_wait_ratio` of the size of net.ipv4.ip_local_port_range; CRITICAL at 0.9. "
         "Only INFO where net.ipv4.tcp_tw_reuse lets new connections reuse those ports "
         "(1: always; 2, the default: when either end is loopback); the evidence says "
         "`tw_reuse_applies`.",
         "This host opens many short outgoing connections and closes them first; each "
         "holds its local port for 60 s. When the range runs out, connect() fails with "
         "EADDRNOTAVAIL (Cannot assign requested address).",
         "Reuse connections (keep-alive, pools); widen net.ipv4.ip_local_port_range; "
         "net.ipv4.tcp_tw_reuse=1 lets new outgoing connections reuse TIME_WAIT ports.",
         "time_wait_ratio", _time_wait, picks=(Pick(TcpState.TIME_WAIT, grouped=True),)),
    Rule("FIN_WAIT1_PILE", Severity.WARNING, "FIN_WAIT1 pile",
         "At least `fin_wait1` FIN_WAIT1 sockets in one group. " + _PILE_GROUPS,
         "We closed with data or a FIN still unacknowledged: peers are gone or not reading "
         "(common right after shutting down a server with many clients).",
         "Check the peers' reachability; net.ipv4.tcp_orphan_retries bounds how long "
         "orphaned sockets retry.",
         "fin_wait1", _pile(TcpState.FIN_WAIT1, "fin_wait1"),
         picks=(_LISTENERS, Pick(TcpState.FIN_WAIT1, "fin_wait1"))),
    Rule("FIN_WAIT2_PILE", Severity.WARNING, "FIN_WAIT2 pile",
         "At least `fin_wait2` FIN_WAIT2 sockets in one group. " + _PILE_GROUPS,
         "Our FIN was acknowledged but the peer never closes its side: the peer application "
         "leaks sockets (the CLOSE_WAIT pile is on its host).",
         "Look at the peer application; net.ipv4.tcp_fin_timeout bounds orphaned FIN_WAIT2.",
         "fin_wait2", _pile(TcpState.FIN_WAIT2, "fin_wait2"),
         picks=(_LISTENERS, Pick(TcpState.FIN_WAIT2, "fin_wait2"))),
    Rule("LAST_ACK_PILE", Severity.WARNING, "LAST_ACK pile",
         "At least `last_ack` LAST_ACK sockets in one group. " + _PILE_GROUPS,
         "We closed after the peer did and our FIN is not acknowledged: peers vanished "
         "(often a load-test client killed abruptly).",
         "Usually transient; if it persists, check the path to those peers.",
         "last_ack", _pile(TcpState.LAST_ACK, "last_ack"),
         picks=(_LISTENERS, Pick(TcpState.LAST_ACK, "last_ack"))),
    Rule("RETRANSMITTING", Severity.WARNING, "ESTABLISHED connections retransmitting",
         "ESTABLISHED connections with the retransmit timer pending and at least `retrans` "
         "consecutive retransmissions, grouped per remote address.",
         "The peer stopped acknowledging: it vanished (host down, cable pulled, route or "
         "firewall change). Without TCP_USER_TIMEOUT the kernel retries for ~15 minutes "
         "(net.ipv4.tcp_retries2) before ETIMEDOUT.",
         "Set TCP_USER_TIMEOUT (pysockopt.KeepaliveConfig.for_detection) so sends to a "
         "vanished peer fail in seconds; check the path to that address.",
         "retrans", _retransmitting,
         picks=(Pick(TcpState.ESTABLISHED, timer=Timer.RETRANSMIT, retrans="retrans",
                     info=("last_ack_recv",)),)),
    Rule("IDLE_NO_KEEPALIVE", Severity.WARNING, "Long-idle connections without keepalive",
         "ESTABLISHED connections with no timer pending (so no keepalive) and nothing "
         "received, not even an ACK, for at least `idle_seconds` (tcp_info last_data_recv "
         "and last_ack_recv).",
         "Half-open suspects: if the peer vanished without FIN or RST, nothing will ever "
         "tell this side, and the connection stays ESTABLISHED forever.",
         "Enable keepalive with short values (pysockopt.apply_keepalive with "
         "KeepaliveConfig.for_detection(30)) or application heartbeats.",
         "idle_seconds", _idle_no_keepalive,
         picks=(Pick(TcpState.ESTABLISHED, timer=Timer.NONE, idle="idle_seconds",
                     info=("last_data_recv", "last_ack_recv")),)),
    Rule("KEEPALIVE_DEFAULTS", Severity.INFO, "Host keepalive at Linux defaults",
         "net.ipv4.tcp_keepalive_time/_intvl/_probes at 7200/75/9.",
         "A socket that enables SO_KEEPALIVE without its own values notices a dead peer "
         "after 2 h 11 min.",
         "Set per-socket values (pysockopt keepalive --detect 30) or lower the sysctls.",
         None, _keepalive_defaults),
    Rule("CLOSE_WAIT_GROWING", Severity.WARNING, "CLOSE_WAIT growing",
         "The net growth (sockets now minus before, so closed ones count against it) of "
         "one owner's CLOSE_WAIT sockets during the interval, at least `close_wait_growth`, "
         "even while the pile is below `close_wait`. Owners: uid and listening local port "
         "(server side), uid and remote endpoint (client side), then uid alone for what "
         "grows across many endpoints. Names the processes holding the new sockets. The "
         "evidence says how many were `new` and how many `closed` in between: a server "
         "whose CLOSE_WAIT sockets come and go within the interval shows many of both "
         "(raise `close_wait_growth` or lengthen the interval there).",
         "A leak in progress: the application keeps receiving FINs and never calls close() "
         "on those sockets. A slow leak (a few a minute) takes days to make a pile a "
         "snapshot notices; the growth shows in minutes.",
         "Fix the application to close sockets on EOF and on every error path; until then "
         "restarting it releases them. A slower leak needs a longer interval "
         "(`pysockopt diagnose --interval 60`).",
         "close_wait_growth", _close_wait_growing, interval=True,
         picks=(_LISTENERS, Pick(TcpState.CLOSE_WAIT))),
    Rule("PORT_EXHAUSTION_ETA", Severity.WARNING,
         "Ephemeral ports running out",
         "Per local address and destination: the ephemeral local ports held by client "
         "sockets (any state, TIME_WAIT included) growing during the interval at a pace "
         "that uses up net.ipv4.ip_local_port_range within `port_exhaustion_seconds`. The "
         "pace is new connections minus ports freed. CRITICAL within a minute; INFO where "
         "net.ipv4.tcp_tw_reuse lets new connections reuse TIME_WAIT ports.",
         "Short outgoing connections, each closed first by this host, leave TIME_WAIT for "
         "60 s on their port: opened faster than range/60 per second, the ports run out "
         "and connect() fails with EADDRNOTAVAIL.",
         "Reuse connections (pools, HTTP keep-alive); widen net.ipv4.ip_local_port_range; "
         "connect from more local addresses; net.ipv4.tcp_tw_reuse=1 for outgoing "
         "connections with timestamps.",
         "port_exhaustion_seconds", _port_exhaustion, interval=True,
         picks=(Pick(None, grouped=True),)),
    Rule("RETRANSMITS_RISING", Severity.WARNING, "Retransmissions rising",
         "Tcp RetransSegs over OutSegs during the interval at least `retrans_ratio` (and at "
         f"least {_MIN_RETRANS} segments); CRITICAL at ten times that. TcpExt TCPTimeouts "
         "and TCPSynRetrans in the evidence.",
         "Segments are being lost: a congested or failing link, a peer that vanished, a "
         "firewall dropping packets. SYN retransmissions point at a destination that does "
         "not answer.",
         "Find which connections (the RETRANSMITTING rule, `ss -ti`) and which path; check "
         "interface errors and drops.",
         "retrans_ratio", _retransmits_rising, interval=True),
    Rule("SYN_FLOOD_NOW", Severity.WARNING, "SYN flood in progress",
         "SYN_RECV entries of one port growing by at least `syn_recv_growth` during the "
         "interval, or the kernel sending SYN cookies (TcpExt SyncookiesSent: only when a "
         "SYN queue is full); CRITICAL when it also dropped SYNs for a full queue "
         "(TCPReqQFullDrop).",
         "Handshakes are opened faster than they complete: a SYN flood (spoofed sources "
         "never answer the SYN+ACK), or a wave of clients on a lossy path.",
         "Keep net.ipv4.tcp_syncookies=1; filter the sources upstream; a larger listen "
         "backlog and net.ipv4.tcp_max_syn_backlog for real bursts.",
         "syn_recv_growth", _syn_flood_now, interval=True,
         picks=(Pick(TcpState.SYN_RECV, "syn_recv_growth"),)),
    Rule("ABORTS", Severity.WARNING, "Connections aborted",
         "TcpExt TCPAbortOnTimeout plus TCPAbortOnData during the interval, at least "
         "`aborts`; a WARNING when timeouts are at least half of them, else INFO. "
         "TCPAbortOnClose/OnMemory/OnLinger in the evidence.",
         "OnTimeout: the kernel gave up on connections whose peer stopped answering "
         "(retransmissions, keepalive probes or TCP_USER_TIMEOUT ran out). OnData: data "
         "arrived on a socket the application had already closed, so the kernel answered "
         "with RST.",
         "For timeouts, look at the peers and the path (RETRANSMITS_RISING); for resets on "
         "data, the application closes connections the peer still sends on (shutdown(), "
         "then read to EOF before close()).",
         "aborts", _aborts, interval=True),
    Rule("SHORT_LIVED_CHURN", Severity.WARNING,
         "Many short-lived connections to one destination",
         "At least `short_lived` connections to one remote address that opened and closed "
         "between two looks during the interval (the closed-connection log: lifetime only "
         "an upper bound). Each connection counts once, by its outbound end (a close on a "
         "listening port is the accepted end). The owner is the one a lookup named for the "
         "closed socket, else unknown: no look saw such a connection, and other sockets "
         "to the same address may be another process's.",
         "A client opens a connection per request instead of reusing one: each costs a "
         "handshake and leaves TIME_WAIT on one side; at a high rate the ephemeral ports "
         "run out (EADDRNOTAVAIL).",
         "Pool the connections (HTTP keep-alive, a database pool) in the owner named.",
         "short_lived", _short_lived, interval=True, closes=True),
    Rule("PEERS_DYING", Severity.WARNING, "Peers dying",
         "At least `peers_dying` connections to one remote address that the kernel gave "
         "up on during the interval: keepalive probes, TCP_USER_TIMEOUT or "
         "retransmissions ran out (the closed-connection log's gave_up verdict, from the "
         "final tcp_info).",
         "The peer stopped answering: a host down, a network path broken, a firewall "
         "dropping the traffic. Each of those connections failed with ETIMEDOUT.",
         "Check that peer and the path to it; its other connections will die the same way.",
         "peers_dying", _peers_dying, interval=True, closes=True),
    Rule("CLOSED_WITH_UNACKED_DATA", Severity.WARNING,
         "Connections closing with unacknowledged data",
         "At least `unacked_closes` connections per port and owner closed, during the "
         "interval, with data the peer never acknowledged (the closed-connection log's "
         "evidence: the send queue at close).",
         "Data written was lost: the connection was reset or given up while bytes were in "
         "flight, so the peer never got them (a killed peer, SO_LINGER 0, a close on "
         "unread data).",
         "Find why those connections end early (the peer's logs, resets on the path); "
         "shut down cleanly (shutdown(), read to EOF, then close()).",
         "unacked_closes", _unacked_closes, interval=True, closes=True),
    Rule("ORPHAN_PRESSURE", Severity.WARNING, "Orphaned sockets near tcp_max_orphans",
         "/proc/net/sockstat orphans (sockets no process holds any more, still closing) at "
         "least `orphan_ratio` of net.ipv4.tcp_max_orphans; CRITICAL at 0.9. Both are "
         "host-wide: inside a network namespace the maximum cannot be read.",
         "Past the maximum the kernel resets orphans at once (\"too many orphaned "
         "sockets\"): peers see RST instead of a clean close. Usually many connections "
         "closed towards slow or vanished peers (FIN_WAIT1, LAST_ACK).",
         "Look at the FIN_WAIT1/LAST_ACK piles and their peers; lower "
         "net.ipv4.tcp_orphan_retries; raise tcp_max_orphans only with the memory for it.",
         "orphan_ratio", _orphan_pressure),
    Rule("TCP_MEMORY_PRESSURE", Severity.WARNING, "TCP memory at the pressure mark",
         "/proc/net/sockstat TCP mem (pages) at least `tcp_mem_ratio` of the pressure "
         "value of net.ipv4.tcp_mem (low pressure high, in pages); CRITICAL at the high "
         "value. tcp_mem exists only in the initial network namespace.",
         "Socket buffers hold too much memory: the kernel shrinks buffers under pressure "
         "and, at the high mark, refuses new buffer memory (sends stall, packets dropped, "
         "orphans reset).",
         "Find the sockets with large Recv-Q/Send-Q (`ss -tm`): readers that do not read, "
         "peers that do not read; raise tcp_mem only with the RAM for it.",
         "tcp_mem_ratio", _tcp_memory),
    Rule("CONNTRACK_NEAR_FULL", Severity.WARNING, "Connection tracking table near full",
         "net.netfilter.nf_conntrack_count at least `conntrack_ratio` of nf_conntrack_max; "
         "CRITICAL at 0.95. Only where conntrack is loaded. The count is the network "
         "namespace's; the maximum and the table are the host's.",
         "When the table is full the kernel drops the packets of new connections "
         "(\"nf_conntrack: table full, dropping packet\"): clients see timeouts while the "
         "sockets look fine.",
         "Raise net.netfilter.nf_conntrack_max (and the hash size), shorten the conntrack "
         "timeouts for short connections, or exempt the busy traffic with NOTRACK rules.",
         "conntrack_ratio", _conntrack),
    Rule("TIME_WAIT_BUCKETS", Severity.WARNING, "TIME_WAIT near tcp_max_tw_buckets",
         "/proc/net/sockstat TIME_WAIT count at least `time_wait_buckets_ratio` of "
         "net.ipv4.tcp_max_tw_buckets; CRITICAL at the maximum.",
         "At the maximum the kernel closes sockets without TIME_WAIT (\"time wait bucket "
         "table overflow\", TcpExt TCPTimeWaitOverflow): late segments of old connections "
         "may then corrupt new ones with the same ports.",
         "Reuse connections instead of opening one per request; let the side that can "
         "afford it close first; raise tcp_max_tw_buckets if memory allows.",
         "time_wait_buckets_ratio", _time_wait_buckets),
)


def _show(value: int | None) -> int | str:
    return "unknown" if value is None else value
