"""sample(), Sample.rates() and the rules that need time or the host counters, on the real kernel.

Piles are made to grow at a known pace (a CLOSE_WAIT leak, a listener dropping SYNs, a client
opening connections to a small port range inside a private namespace); the measured rates
must be within 25% of the made ones, the rules must fire, and they must stay quiet on a
static pile of the same size.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import NetnsPair, sysctl
from paced import Pacer, close_wait_leak
from sockpiles import Pile, flood_target, syn_flood
from waiting import wait_for

import pysockopt
from pysockopt import Counters, Diagnosis, Finding, Sample, Severity, TcpState, Thresholds, _host
from pysockopt.cli import main as cli_main
from pysockopt.host.diagnosis import host_facts
from pysockopt.host.rules import RULES, Snapshot
from pysockopt.host.sample import counter_delta

#: How far a measured rate may be from the made one.
TOLERANCE = 0.25


def _found(d: Diagnosis, code: str) -> list[Finding]:
    return [f for f in d.findings if f.code == code]


def _evidence(f: Finding) -> dict[str, object]:
    return {e.name: e.value for e in f.evidence}


def _within(measured: float, made: float) -> bool:
    return abs(measured - made) <= TOLERANCE * made


# --- counters: parsed values equal the kernel's own tools


def _nstat(netns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "netns", "exec", netns, "nstat", "-asz"], check=True,
                         capture_output=True, text=True).stdout
    values = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values


def _cat(netns: str, path: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "cat", path], check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.root
def test_counters_equal_nstat_and_proc_for_the_same_moment(netns_pair: NetnsPair) -> None:
    # A private namespace is quiet: nothing else moves its counters between the two reads.
    def traffic() -> Counters:
        with Pile() as pile:
            pile.established(3)
            pile.time_wait(4)
            return Counters.read()

    netns_pair.in_ns("a", traffic)
    # The closes' last segments: 4 TIME_WAIT made, and the 3 pairs closed client first.
    def settled() -> bool:
        stat = netns_pair.in_ns("a", Counters.read).sockstat
        return stat["inuse"] == 0 and stat["tw"] == 7

    wait_for(settled, 5, "the closed pairs to settle in TIME_WAIT")
    ours = netns_pair.in_ns("a", Counters.read)
    nstat = _nstat(netns_pair.a)
    again = netns_pair.in_ns("a", Counters.read)
    assert (ours.tcp_ext, ours.tcp) == (again.tcp_ext, again.tcp), "the namespace was not quiet"
    compared = 0
    for name, value in ours.tcp_ext.items():
        if f"TcpExt{name}" in nstat:
            assert value == nstat[f"TcpExt{name}"], name
            compared += 1
        else:
            assert value is None, f"{name} is not in this kernel's nstat, but we read {value}"
    for name, value in ours.tcp.items():
        if name != "CurrEstab":  # a gauge: nstat leaves it out, /proc/net/snmp has it
            assert value == nstat[f"Tcp{name}"], name
            compared += 1
    assert compared >= len(_host.SNMP_TCP_FIELDS) - 1 + 10
    assert ours.tcp["ActiveOpens"] == 7 and ours.tcp["PassiveOpens"] == 7
    # /proc/net/snmp read by another process, and sockstat as cat shows it.
    snmp = _cat(netns_pair.a, "/proc/net/snmp").splitlines()
    names, values = (line.split()[1:] for line in snmp if line.startswith("Tcp:"))
    table = dict(zip(names, values, strict=True))
    for name, value in ours.tcp.items():
        assert str(value) == table[name], name
    (tcp_line,) = [line for line in _cat(netns_pair.a, "/proc/net/sockstat").splitlines()
                   if line.startswith("TCP:")]
    words = tcp_line.split()[1:]
    expected = {k: int(v) for k, v in zip(words[::2], words[1::2], strict=True)}
    for name in ("inuse", "tw"):  # orphan, alloc and mem are host-wide: they move
        assert ours.sockstat[name] == expected[name], name
    # Where each sysctl lives, as the docs table says (_host.COUNTER_SYSCTLS).
    for name, scope in _host.COUNTER_SYSCTLS.items():
        path = "/proc/sys/" + name.replace(".", "/")
        if not os.path.exists(path):  # conntrack not loaded on this host
            continue
        there = subprocess.run(["ip", "netns", "exec", netns_pair.a, "test", "-e", path])
        assert (there.returncode == 0) == (scope != "initial namespace only"), name
    # Per namespace: tcp_mem and tcp_max_orphans exist only in the initial namespace.
    assert ours.tcp_mem is None and ours.tcp_max_orphans is None
    assert ours.tcp_max_tw_buckets == int(_cat(netns_pair.a,
                                               "/proc/sys/net/ipv4/tcp_max_tw_buckets"))
    assert ours.ip_local_port_range is not None


def test_counters_of_this_namespace_have_every_limit() -> None:
    c = Counters.read()
    assert c.tcp_mem is not None and len(c.tcp_mem) == 3
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        assert c.tcp_mem == tuple(int(x) for x in f.read().split())
    assert isinstance(c.tcp_max_orphans, int) and isinstance(c.tcp_max_tw_buckets, int)
    assert all(isinstance(c.tcp[k], int) for k in _host.SNMP_TCP_FIELDS)
    assert set(c.sockstat) == set(_host.SOCKSTAT_FIELDS)
    json.dumps(c.as_dict())


def test_sockstat_and_counter_parsers() -> None:
    text = ("sockets: used 17\nTCP: inuse 1 orphan 3 tw 150 alloc 4 mem 27\n"
            "UDP: inuse 0 mem 0\n")
    assert _host.sockstat_table(text) == {"inuse": 1, "orphan": 3, "tw": 150, "alloc": 4,
                                          "mem": 27}
    assert _host.sockstat_table(text, "UDP") == {"inuse": 0, "mem": 0}
    assert _host.sockstat_table("TCP: inuse x orphan\n") == {"inuse": None}
    assert _host.sockstat_table("") == {}
    files = {"/proc/thread-self/net/netstat": "TcpExt: ListenDrops TCPAbortOnData\n"
                                              "TcpExt: 5 7\n",
             "/proc/thread-self/net/snmp": "Tcp: MaxConn ActiveOpens\nTcp: -1 12\n",
             "/proc/thread-self/net/sockstat": text,
             "/proc/sys/net/ipv4/tcp_mem": "1 2 3\n",
             "/proc/sys/net/ipv4/ip_local_port_range": "40000\t40999\n",
             "/proc/sys/net/netfilter/nf_conntrack_max": "garbage\n"}
    asked: list[str] = []

    def read(paths: Sequence[str]) -> list[str | None]:  # the seam: any source of file texts
        asked.extend(paths)
        return [files.get(p) for p in paths]

    raw = _host.read_counters(read)
    assert asked == list(_host.COUNTER_FILES)  # one call for every file
    assert raw.tcp_ext["ListenDrops"] == 5 and raw.tcp_ext["TCPAbortOnData"] == 7
    assert raw.tcp_ext["SyncookiesSent"] is None and raw.tcp["ActiveOpens"] == 12
    assert raw.tcp_mem == (1, 2, 3) and raw.ip_local_port_range == (40000, 40999)
    assert raw.conntrack_max is None and raw.conntrack_count is None
    assert raw.sockstat["tw"] == 150


# --- counters that wrap or restart


@pytest.mark.parametrize(("before", "now", "bits", "expected"), [
    (5, 9, 64, (4, False)),
    (9, 9, 64, (0, False)),
    (2**64 - 3, 4, 64, (7, False)),     # wrapped past 2**64 - 1
    (2**32 - 1, 2, 32, (3, False)),     # a 32-bit counter wraps at 2**32
    (1000, 3, 64, (3, True)),           # went down: reset, counted from zero
    (2**31, 5, 32, (5, True)),          # half the range away: a reset, not a wrap
])
def test_counter_delta(before: int, now: int, bits: int, expected: tuple[int, bool]) -> None:
    assert counter_delta(before, now, bits) == expected


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_counter_delta_is_never_negative(before: int, now: int) -> None:
    delta, restarted = counter_delta(before, now)
    assert 0 <= delta < 2**64
    assert restarted == (now < before and delta == now and (now - before) % 2**64 >= 2**63)


def _with_counters(s: Sample, **changes: object) -> Sample:
    c = s.counters
    fields: dict[str, Any] = {
        k: MappingProxyType(dict(getattr(c, k), **v)) if isinstance(v, dict) else v
        for k, v in changes.items()}
    return dataclasses.replace(s, counters=dataclasses.replace(c, **fields))


def test_rates_of_counters_never_go_negative() -> None:
    base = pysockopt.sample(port=1, detail=False)
    s0 = _with_counters(base, tcp_ext={"ListenDrops": 2**64 - 10},
                        tcp={"RetransSegs": 500, "CurrEstab": 7})
    s1 = _with_counters(dataclasses.replace(base, time=base.time + 2.0),
                        tcp_ext={"ListenDrops": 10}, tcp={"RetransSegs": 0, "CurrEstab": 0})
    r = s1.rates(s0)
    assert r.counter("TcpExt.ListenDrops") == (20, 10.0)  # wrapped
    assert r.counter("Tcp.RetransSegs") == (0, 0.0)  # went down: reset, nothing counted
    assert r.gauges["Tcp.CurrEstab"] == (-7, -3.5)   # a gauge may go down
    assert all(c.delta >= 0 and c.per_second >= 0 for c in r.counters.values())
    with pytest.raises(pysockopt.InvalidConfigError):
        s0.rates(s1)  # the earlier one must be earlier
    with pytest.raises(TypeError):
        s0.rates("yesterday")  # type: ignore[arg-type]


def test_sample_without_detail_has_counts_listeners_and_counters() -> None:
    with Pile(backlog=7) as pile:
        pile.established(2)
        pile.close_wait(3)
        s = pysockopt.sample(port=pile.port, detail=False)
        full = pysockopt.sample(port=pile.port)
    assert not s.detail and s.close_wait is None and s.ports is None
    assert s.counts == full.counts == {TcpState.ESTABLISHED: 4, TcpState.FIN_WAIT2: 3,
                                       TcpState.CLOSE_WAIT: 3, TcpState.LISTEN: 1}
    (listener,) = s.listeners
    assert listener.local_port == pile.port and listener.backlog == 7 and listener.drops == 0
    assert full.detail and full.close_wait is not None and len(full.close_wait) == 3
    assert s.total == 11 and isinstance(s.counters.tcp["ActiveOpens"], int)
    json.dumps(full.as_dict())
    with pytest.raises(pysockopt.InvalidConfigError):
        pysockopt.sample(detail="yes")  # type: ignore[arg-type]


# --- a CLOSE_WAIT leak at a known pace


@pytest.mark.slow
def test_close_wait_leak_rate_and_rule() -> None:
    with Pile() as pile:
        pile.established(1)
        with close_wait_leak(pile) as leak:  # 10 per second
            wait_for(lambda: leak.done >= 3, 5, "the leak to start")
            s0 = pysockopt.sample(port=pile.port)
            made0 = leak.done
            time.sleep(2.0)
            s1 = pysockopt.sample(port=pile.port)
            made1 = leak.done
            r = s1.rates(s0)
            # Below the snapshot threshold for the pile: the growth is found anyway.
            high = Thresholds(close_wait=10_000)
            d = pysockopt.diagnose(port=pile.port, interval=1.5, thresholds=high)
        stopped = pysockopt.sample(port=pile.port)
        kept = (made1 - made0) / r.seconds
        (g,) = [g for g in r.close_wait if g.port == pile.port]
        assert _within(g.per_second, 10.0), (g.per_second, kept)
        assert _within(g.per_second, kept), (g.per_second, kept)
        assert g.uid == os.geteuid() and len(g.new) == g.delta > 0 and g.gone == 0
        assert r.states[TcpState.CLOSE_WAIT].delta == g.delta
        assert d.interval is not None and d.interval >= 1.5
        (f,) = _found(d, "CLOSE_WAIT_GROWING")
        ev = _evidence(f)
        assert _within(float(ev["per_second"]), 10.0), ev  # type: ignore[arg-type]
        assert ev["grouped_by"] == "listening port" and f.port == pile.port
        assert any(p.pid == os.getpid() for p in f.processes)
        assert not _found(d, "CLOSE_WAIT_PILE") and f.severity == Severity.WARNING
        assert "Rates measured over" in d.render()
        # The same pile, now static: no growth, no finding.
        static = pysockopt.diagnose(port=pile.port, interval=1.0, thresholds=high)
        assert not _found(static, "CLOSE_WAIT_GROWING")
        assert static.counts[TcpState.CLOSE_WAIT] == stopped.counts[TcpState.CLOSE_WAIT] >= 30


def test_static_close_wait_pile_does_not_grow() -> None:
    with Pile() as pile:
        pile.close_wait(20)
        d = pysockopt.diagnose(port=pile.port, interval=0.5)
        assert d.counts[TcpState.CLOSE_WAIT] == 20
        assert not _found(d, "CLOSE_WAIT_GROWING") and _found(d, "CLOSE_WAIT_PILE")
        assert pysockopt.diagnose(port=pile.port).interval is None


@pytest.mark.root
def test_client_side_leak_to_many_endpoints_is_found_per_uid(netns_pair: NetnsPair) -> None:
    # One leaked socket to each of several servers: no single endpoint grows by three,
    # the uid does. In a namespace of its own, so no other process's sockets move.
    def inside() -> list[Finding]:
        piles = [Pile() for _ in range(4)]
        try:
            s0 = pysockopt.sample()
            for p in piles:
                p.leaked_clients(1)
            s1 = pysockopt.sample()
            snap = Snapshot((), {}, host_facts(), sample=s1, rates=s1.rates(s0))
            rule = next(r for r in RULES if r.code == "CLOSE_WAIT_GROWING")
            return list(rule.check(rule, snap, Thresholds(close_wait_growth=4)))
        finally:
            for p in piles:
                p.close()

    (f,) = netns_pair.in_ns("a", inside)
    assert _evidence(f)["grouped_by"] == "uid" and _evidence(f)["close_wait_growth"] == 4
    assert f"uid {os.geteuid()} to 4 remote endpoints" in f.summary
    assert any(p.pid == os.getpid() for p in f.processes)


# --- a listener dropping SYNs at a known pace


def _syn_once(port: int) -> None:
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", port))  # one SYN, into a full queue: dropped
    time.sleep(0.01)
    c.close()  # before its first retransmission (1 s): exactly one SYN per attempt


@pytest.mark.slow
def test_listener_drops_at_a_known_pace() -> None:
    with Pile(backlog=0) as pile:
        pile.unaccepted(1)  # listen(0) holds one: the queue is now full
        wait_for(lambda: pysockopt.sample(port=pile.port).listeners[0].accept_queue == 1,
                 5, "the accept queue to fill")
        with Pacer(0.1, lambda: _syn_once(pile.port)) as pacer:  # 10 drops per second
            wait_for(lambda: pacer.done >= 2, 5, "the SYNs to start")
            s0 = pysockopt.sample(port=pile.port, detail=False)
            time.sleep(2.0)
            s1 = pysockopt.sample(port=pile.port, detail=False)
            d = pysockopt.diagnose(port=pile.port, interval=1.0)
        r = s1.rates(s0)
        (ld,) = r.listeners
        assert _within(ld.per_second, 10.0), ld
        assert not ld.restarted and ld.listener.local_port == pile.port
        host = r.counter("TcpExt.ListenDrops")
        assert host is not None and host.delta >= ld.drops  # the host counts everyone's
        (f,) = _found(d, "LISTEN_DROPS")
        ev = _evidence(f)
        assert f.severity == Severity.WARNING and "in the last 1.0 s" in f.summary
        assert _within(float(ev["drops_per_second"]), 10.0), ev  # type: ignore[arg-type]
        assert int(ev["drops"]) >= int(ev["drops_during"])  # type: ignore[call-overload]
        # Stopped: the count stays, it is old news unless the queue is full now.
        quiet = pysockopt.diagnose(port=pile.port, interval=0.5)
        (q,) = _found(quiet, "LISTEN_DROPS")
        assert q.severity == Severity.INFO and "since the listener started" in q.summary
        assert "none in the last" in q.summary
        (snap,) = _found(pysockopt.diagnose(port=pile.port), "LISTEN_DROPS")
        assert snap.severity == Severity.WARNING and "full now" in snap.summary


def test_listener_drops_since_start_are_info_when_the_queue_has_room() -> None:
    with Pile(backlog=0) as pile:
        pile.unaccepted(1)
        wait_for(lambda: pysockopt.sample(port=pile.port).listeners[0].accept_queue == 1,
                 5, "the accept queue to fill")
        _syn_once(pile.port)
        wait_for(lambda: pysockopt.sample(port=pile.port).listeners[0].drops, 5, "a drop")
        server, _ = pile.listener.accept()  # room again
        pile.held.append(server)
        (f,) = _found(pysockopt.diagnose(port=pile.port), "LISTEN_DROPS")
        assert f.severity == Severity.INFO and "since the listener started" in f.summary


def test_a_restarted_listener_counts_from_zero() -> None:
    with Pile(backlog=0) as first:
        first.unaccepted(1)
        wait_for(lambda: pysockopt.sample(port=first.port).listeners[0].accept_queue == 1,
                 5, "the accept queue to fill")
        for _ in range(3):
            _syn_once(first.port)
        wait_for(lambda: (pysockopt.sample(port=first.port).listeners[0].drops or 0) >= 3,
                 5, "three drops")
        s0 = pysockopt.sample(port=first.port, detail=False)
        port = first.port
    with Pile(backlog=0, port=port) as second:  # the server restarted on the same port
        second.unaccepted(1)
        wait_for(lambda: pysockopt.sample(port=port).listeners[0].accept_queue == 1,
                 5, "the accept queue to fill")
        _syn_once(port)
        wait_for(lambda: pysockopt.sample(port=port).listeners[0].drops, 5, "a drop")
        s1 = pysockopt.sample(port=port, detail=False)
    (ld,) = s1.rates(s0).listeners
    assert ld.restarted and ld.drops == s1.listeners[0].drops == 1


# --- ports running out: a client opening connections to a small range, in a namespace


def _short_connection(pile: Pile) -> None:
    client, server = pile._pair()
    client.close()  # the client closes first: its port stays in TIME_WAIT for 60 s
    server.recv(1)
    server.close()


@pytest.mark.root
@pytest.mark.slow
def test_port_exhaustion_eta_at_a_known_connection_rate(netns_pair: NetnsPair) -> None:
    def inside() -> tuple[float, float, Diagnosis, Diagnosis]:
        sysctl("net.ipv4.ip_local_port_range", "40000 40999")  # 1000 ports, this namespace only
        sysctl("net.ipv4.tcp_tw_reuse", "0")
        with Pile() as pile, Pacer(0.02, lambda: _short_connection(pile)) as pacer:  # 50/s
            wait_for(lambda: pacer.done >= 10, 5, "the connections to start")
            s0 = pysockopt.sample()
            time.sleep(2.0)
            s1 = pysockopt.sample()
            d = pysockopt.diagnose(interval=1.0)
        (p,) = [p for p in s1.rates(s0).ports if p.destination.remote_port == pile.port]
        with Pile() as static:
            for _ in range(p.now):
                _short_connection(static)
            quiet = pysockopt.diagnose(interval=1.0)
        return p.per_second, p.now, d, quiet

    per_second, in_use, d, quiet = netns_pair.in_ns("a", inside)
    assert _within(per_second, 50.0), per_second
    (f,) = _found(d, "PORT_EXHAUSTION_ETA")
    ev = _evidence(f)
    assert _within(float(ev["ports_per_second"]), 50.0), ev  # type: ignore[arg-type]
    assert ev["ephemeral_ports"] == 1000 and ev["tw_reuse_applies"] == "no"
    eta = (1000 - int(str(ev["in_use"]))) / float(ev["ports_per_second"])  # type: ignore[arg-type]
    assert float(ev["eta_s"]) == pytest.approx(eta, abs=0.1)  # type: ignore[arg-type]
    assert f.severity == Severity.CRITICAL  # well under a minute
    assert "new connections/s to 127.0.0.1:" in f.summary and "run out in ~" in f.summary
    # A static pile of the same size: TIME_WAIT for 60 s, nothing new, no ETA.
    assert quiet.counts.get(TcpState.TIME_WAIT, 0) >= in_use
    assert not _found(quiet, "PORT_EXHAUSTION_ETA")


# --- a SYN flood in progress


@pytest.mark.root
def test_syn_flood_now(netns_pair: NetnsPair) -> None:
    listener, sources = flood_target(netns_pair, 6001, 512)
    try:
        s0 = netns_pair.in_ns("b", lambda: pysockopt.sample(port=6001))
        syn_flood(netns_pair, sources, 6001, 120)  # all 120 there, counted by ss
        wait_for(lambda: netns_pair.in_ns("b", lambda: pysockopt.state_counts(port=6001))
                 .get(TcpState.SYN_RECV) == 120, 30, "120 SYN_RECV")
        d = netns_pair.in_ns("b", lambda: pysockopt.diagnose(port=6001, earlier=s0))
        (f,) = _found(d, "SYN_FLOOD_NOW")
        assert _evidence(f)["syn_recv_growth"] == 120 and f.port == 6001
        again = netns_pair.in_ns("b", lambda: pysockopt.diagnose(port=6001, interval=0.3))
        assert not _found(again, "SYN_FLOOD_NOW")  # the pile stays; it grows no more
        assert _found(again, "SYN_RECV_PILE")
    finally:
        listener.close()


# --- conntrack, live in a test namespace (never the host's maximum)


def _nft(netns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script, text=True,
                   check=True, capture_output=True)


@pytest.mark.root
def test_conntrack_count_in_a_namespace(netns_pair: NetnsPair) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (.ci/install.sh installs nftables)")
    # The ct rule first: where conntrack is a module (Debian's kernels), it is what loads it,
    # and nf_conntrack_count appears only then.
    try:
        _nft(netns_pair.a, "table inet pso {\n chain inbound {\n"
                           "  type filter hook input priority 0;\n"
                           "  ct state established,related,new accept\n }\n}\n")
    except subprocess.CalledProcessError as err:
        pytest.skip(f"no conntrack in this kernel: nft says {err.stderr.strip()}")
    before = netns_pair.in_ns("a", Counters.read)
    if before.conntrack_count is None:
        pytest.skip("no conntrack in this kernel (no nf_conntrack_count with a ct rule loaded)")
    assert before.conntrack_count == 0

    def connect(n: int) -> tuple[Pile, Counters]:
        pile = Pile()
        pile.established(n)
        return pile, Counters.read()

    pile, counted = netns_pair.in_ns("a", lambda: connect(5))
    try:
        assert counted.conntrack_count == 5
        text = _cat(netns_pair.a, "/proc/sys/net/netfilter/nf_conntrack_count")
        assert int(text) == 5
        with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
            assert counted.conntrack_max == int(f.read())  # host-global, read-only in there
        d = netns_pair.in_ns("a", pysockopt.diagnose)
        assert not _found(d, "CONNTRACK_NEAR_FULL")
        assert counted.conntrack_max
        low = Thresholds(conntrack_ratio=4 / counted.conntrack_max)
        (near,) = _found(netns_pair.in_ns("a", lambda: pysockopt.diagnose(thresholds=low)),
                         "CONNTRACK_NEAR_FULL")
        assert _evidence(near)["nf_conntrack_count"] == 5 and near.severity == Severity.WARNING
    finally:
        pile.close()


# --- the counter rules through fixture values


def _check(code: str, counters: Counters, t: Thresholds | None = None) -> list[Finding]:
    s = dataclasses.replace(pysockopt.sample(port=1, detail=False), counters=counters)
    rule = next(r for r in RULES if r.code == code)
    return list(rule.check(rule, Snapshot((), {}, host_facts(), sample=s), t or Thresholds()))


@pytest.mark.parametrize(("code", "changes", "severity"), [
    ("ORPHAN_PRESSURE", {"sockstat": {"orphan": 400}, "tcp_max_orphans": 1000}, None),
    ("ORPHAN_PRESSURE", {"sockstat": {"orphan": 600}, "tcp_max_orphans": 1000}, "warning"),
    ("ORPHAN_PRESSURE", {"sockstat": {"orphan": 950}, "tcp_max_orphans": 1000}, "critical"),
    ("ORPHAN_PRESSURE", {"sockstat": {"orphan": 950}, "tcp_max_orphans": None}, None),
    ("TCP_MEMORY_PRESSURE", {"sockstat": {"mem": 99}, "tcp_mem": (50, 100, 200)}, None),
    ("TCP_MEMORY_PRESSURE", {"sockstat": {"mem": 100}, "tcp_mem": (50, 100, 200)},
     "warning"),
    ("TCP_MEMORY_PRESSURE", {"sockstat": {"mem": 200}, "tcp_mem": (50, 100, 200)},
     "critical"),
    ("TCP_MEMORY_PRESSURE", {"sockstat": {"mem": 10**6}, "tcp_mem": None}, None),
    ("CONNTRACK_NEAR_FULL", {"conntrack_count": 79, "conntrack_max": 100}, None),
    ("CONNTRACK_NEAR_FULL", {"conntrack_count": 80, "conntrack_max": 100}, "warning"),
    ("CONNTRACK_NEAR_FULL", {"conntrack_count": 96, "conntrack_max": 100}, "critical"),
    ("CONNTRACK_NEAR_FULL", {"conntrack_count": None, "conntrack_max": None}, None),
    ("TIME_WAIT_BUCKETS", {"sockstat": {"tw": 79}, "tcp_max_tw_buckets": 100}, None),
    ("TIME_WAIT_BUCKETS", {"sockstat": {"tw": 85}, "tcp_max_tw_buckets": 100}, "warning"),
    ("TIME_WAIT_BUCKETS", {"sockstat": {"tw": 100}, "tcp_max_tw_buckets": 100}, "critical"),
])
def test_counter_rules_at_their_thresholds(code: str, changes: dict[str, object],
                                           severity: str | None) -> None:
    base = Counters.read()
    fields: dict[str, Any] = {
        k: MappingProxyType(dict(getattr(base, k), **v)) if isinstance(v, dict) else v
        for k, v in changes.items()}
    found = _check(code, dataclasses.replace(base, **fields))
    if severity is None:
        assert found == []
    else:
        (f,) = found
        assert f.severity.label == severity and f.advice


@pytest.mark.root
def test_time_wait_buckets_live_in_a_namespace(netns_pair: NetnsPair) -> None:
    def inside() -> tuple[Diagnosis, Diagnosis]:
        sysctl("net.ipv4.tcp_max_tw_buckets", "100")  # this namespace's own limit
        sysctl("net.ipv4.tcp_tw_reuse", "0")
        with Pile() as pile:
            pile.time_wait(70)
            below = pysockopt.diagnose()
            pile.time_wait(20)
            return below, pysockopt.diagnose()

    below, above = netns_pair.in_ns("a", inside)
    assert not _found(below, "TIME_WAIT_BUCKETS")
    (f,) = _found(above, "TIME_WAIT_BUCKETS")
    assert _evidence(f)["time_wait"] == 90 and _evidence(f)["tcp_max_tw_buckets"] == 100


def _pair_of(changes0: dict[str, dict[str, int]],
             changes1: dict[str, dict[str, int]]) -> tuple[Sample, Sample]:
    s0 = pysockopt.sample(port=1)
    s1 = dataclasses.replace(s0, time=s0.time + 10.0)
    return _with_counters(s0, **changes0), _with_counters(s1, **changes1)


def _time_rule(code: str, s0: Sample, s1: Sample) -> list[Finding]:
    rule = next(r for r in RULES if r.code == code)
    snap = Snapshot((), {}, host_facts(), sample=s1, rates=s1.rates(s0))
    assert rule.interval and not list(rule.check(rule, Snapshot((), {}, host_facts(), sample=s1),
                                                 Thresholds()))
    return list(rule.check(rule, snap, Thresholds()))


def test_retransmits_rising_through_counter_values() -> None:
    s0, s1 = _pair_of({"tcp": {"RetransSegs": 100, "OutSegs": 10_000}},
                      {"tcp": {"RetransSegs": 150, "OutSegs": 11_000}})
    (f,) = _time_rule("RETRANSMITS_RISING", s0, s1)  # 50 of 1000: 5%
    assert _evidence(f)["ratio"] == 0.05 and _evidence(f)["retrans_per_second"] == 5.0
    s0, s1 = _pair_of({"tcp": {"RetransSegs": 100, "OutSegs": 10_000}},
                      {"tcp": {"RetransSegs": 105, "OutSegs": 10_100}})
    assert _time_rule("RETRANSMITS_RISING", s0, s1) == []  # 5 segments: noise


def test_aborts_through_counter_values() -> None:
    s0, s1 = _pair_of({"tcp_ext": {"TCPAbortOnTimeout": 1, "TCPAbortOnData": 0}},
                      {"tcp_ext": {"TCPAbortOnTimeout": 21, "TCPAbortOnData": 2}})
    (f,) = _time_rule("ABORTS", s0, s1)
    assert _evidence(f)["aborted"] == 22 and "timed out" in f.summary
    assert f.severity == Severity.WARNING
    s0, s1 = _pair_of({"tcp_ext": {"TCPAbortOnTimeout": 1, "TCPAbortOnData": 0}},
                      {"tcp_ext": {"TCPAbortOnTimeout": 2, "TCPAbortOnData": 30}})
    (f,) = _time_rule("ABORTS", s0, s1)
    assert f.severity == Severity.INFO and "after close()" in f.summary
    s0, s1 = _pair_of({"tcp_ext": {"TCPAbortOnTimeout": 1, "TCPAbortOnData": 0}},
                      {"tcp_ext": {"TCPAbortOnTimeout": 3, "TCPAbortOnData": 2}})
    assert _time_rule("ABORTS", s0, s1) == []


def test_syn_cookies_alone_are_a_flood_now() -> None:
    s0, s1 = _pair_of({"tcp_ext": {"SyncookiesSent": 10, "TCPReqQFullDrop": 0}},
                      {"tcp_ext": {"SyncookiesSent": 5010, "TCPReqQFullDrop": 0}})
    (f,) = _time_rule("SYN_FLOOD_NOW", s0, s1)
    assert "5,000 SYN cookies" in f.summary and f.severity == Severity.WARNING


def test_diagnose_interval_is_validated() -> None:
    for bad in (0, -1, float("nan"), float("inf"), True, "10", 86401):
        with pytest.raises((pysockopt.InvalidConfigError, TypeError)):
            pysockopt.diagnose(port=1, interval=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pysockopt.diagnose(port=1, earlier="then")  # type: ignore[arg-type]


def test_aborts_on_data_live_in_a_namespace(netns_pair: NetnsPair) -> None:
    # Data arriving on sockets their process shut down for reading and writing: the kernel
    # answers with RST and counts TCPAbortOnData (an orphan, after close(), would become a
    # FIN_WAIT2 timewait entry and reset without counting). In a namespace of its own, the
    # counters move only for this.
    def inside() -> tuple[Diagnosis, int]:
        with Pile() as pile:
            pairs = pile.established(12)
            s0 = pysockopt.sample(detail=False)
            for _client, server in pairs:
                server.shutdown(socket.SHUT_RDWR)
            wait_for(lambda: pysockopt.state_counts(port=pile.port).get(TcpState.CLOSE_WAIT)
                     == 12, 5, "the clients in CLOSE_WAIT")
            for client, _server in pairs:
                client.send(b"late")

            def counted() -> int:
                now = Counters.read().tcp_ext["TCPAbortOnData"] or 0
                before = s0.counters.tcp_ext["TCPAbortOnData"] or 0
                return now - before if now - before >= 12 else 0

            aborted = wait_for(counted, 5, "12 aborts on data")
            return pysockopt.diagnose(earlier=s0), aborted

    d, aborted = netns_pair.in_ns("a", inside)
    (f,) = _found(d, "ABORTS")
    assert _evidence(f)["TCPAbortOnData"] == aborted == 12
    assert f.severity == Severity.INFO and "after close()" in f.summary


# --- another namespace, from this thread (netns=)


def test_sample_and_rates_of_another_namespace(netns_pair: NetnsPair) -> None:
    # The caller's thread never enters: the counters are read by a native thread in there.
    pile = netns_pair.in_ns("a", lambda: Pile())
    try:
        netns_pair.in_ns("a", lambda: pile.established(2))
        s0 = pysockopt.sample(netns=netns_pair.a)
        inside = netns_pair.in_ns("a", Counters.read)
        assert s0.counters.tcp == inside.tcp and s0.counters.tcp_ext == inside.tcp_ext
        assert s0.counters.tcp["ActiveOpens"] == 2 and s0.counters.tcp_mem is None
        assert s0.counts == {TcpState.ESTABLISHED: 4, TcpState.LISTEN: 1}
        assert s0.counters.tcp != Counters.read().tcp  # not this namespace's
        light = pysockopt.sample(netns=netns_pair.a, detail=False)
        assert light.counts == s0.counts and light.counters.tcp["ActiveOpens"] == 2
        leak = close_wait_leak(pile)
        netns_pair.in_ns("a", leak.__enter__)  # its thread starts in there
        try:
            d = pysockopt.diagnose(netns=netns_pair.a, interval=1.0)
        finally:
            leak.__exit__(None, None, None)
        (f,) = _found(d, "CLOSE_WAIT_GROWING")
        assert f.netns is not None and f.netns.name == netns_pair.a
        assert d.interval is not None and d.sample is not None
        opens = d.sample.counters.tcp["ActiveOpens"]
        assert opens is not None and opens > 2
    finally:
        pile.close()


def test_cli_diagnose_interval_in_another_namespace(netns_pair: NetnsPair) -> None:
    pile = netns_pair.in_ns("a", lambda: Pile())
    try:
        netns_pair.in_ns("a", lambda: pile.close_wait(2))
        out = io.StringIO()
        status = cli_main(["diagnose", "--interval", "0.5", "--netns", netns_pair.a, "--json"],
                          out=out)
        data = json.loads(out.getvalue())
        (entry,) = data["namespaces"]
        assert entry["netns"]["name"] == netns_pair.a and status in (0, 1)
        d = entry["diagnosis"]
        assert d["interval"] >= 0.5 and d["counts"]["CLOSE_WAIT"] == 2
        human = io.StringIO()
        cli_main(["diagnose", "--interval", "0.3", "--netns", netns_pair.a], out=human)
        assert "Rates measured over" in human.getvalue()
    finally:
        pile.close()


def test_samples_rates_and_diagnoses_pickle() -> None:
    # A Diagnosis carries its Sample; a result sent between processes must survive pickling.
    with Pile() as pile:
        pile.close_wait(3)
        s0 = pysockopt.sample(port=pile.port)
        d = pysockopt.diagnose(port=pile.port, earlier=s0)
    assert d.sample is not None
    for value in (s0, d.sample, d.sample.rates(s0), s0.counters,
                  pysockopt.sample(port=pile.port, detail=False)):
        back = pickle.loads(pickle.dumps(value))
        assert back == value and type(back) is type(value)
    again = pickle.loads(pickle.dumps(s0))
    assert isinstance(again.counts, MappingProxyType) and again.counts == s0.counts
    pickle.dumps(dataclasses.replace(d, counts=dict(d.counts)))
