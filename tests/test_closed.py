"""The closed-connection log: the kernel's destroy announcements, joined with looks.

Each verdict is staged on the real kernel in private namespaces (a peer cut with keepalive and
with data in flight, SO_LINGER 0, SOCK_DESTROY, a plain close); a differential check against
``ss -E`` in the same namespace over the same window; a non-root subscriber; closes in two
namespaces attributed; a followed namespace deleted.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from netns import NetnsPair, have_netns
from unpriv import as_unprivileged, unprivileged_reason
from waiting import wait_for

import pysockopt
from pysockopt.cli import main
from pysockopt.host.closed import (
    LIFETIME_BUCKETS,
    ClosedConnection,
    ClosedConnections,
    CloseFeed,
    CloseStats,
    Lifetime,
    Verdict,
    closed_connections,
    verdict_of,
)
from pysockopt.host.look import Look, Needs, look
from pysockopt.host.namespaces import NetnsPermissionError, namespaces
from pysockopt.host.owners import OwnerCache

root = pytest.mark.root


def _gather(log: ClosedConnections, want: Callable[[list[ClosedConnection]], bool],
            timeout: float = 10.0, port: int | None = None) -> list[ClosedConnection]:
    got: list[ClosedConnection] = []
    deadline = time.monotonic() + timeout
    while not want(got):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; closes so far: {[(c.local, c.remote) for c in got]}")
        got += [c for c in log.poll(0.2)
                if port is None or port in (c.local_port, c.remote_port)]
    return got


def _pair(port: int = 0) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    return listener, client, server


# --- the own namespace: no root needed


def test_a_loopback_close_carries_the_cookie_owner_lifetime_and_byte_counts() -> None:
    # owner_share=1: an owner walk at every look, however long the walks take on this host.
    with closed_connections(look_interval=0.05, owner_share=1.0) as log:
        log.look()  # a look before the connection: its lifetime then has an upper bound
        listener, client, server = _pair()
        port = listener.getsockname()[1]
        cport = client.getsockname()[1]
        cookies = {c.local_port: c.cookie for c in pysockopt.connections(port=port)
                   if c.state == pysockopt.TcpState.ESTABLISHED}
        # A ceiling: each look here walks /proc, seconds on a host of busy processes.
        wait_for(lambda: log.poll(0.05) is not None and log.looks >= 3, timeout=120,
                 what="three looks")
        client.sendall(b"x" * 5000)
        assert len(server.recv(5000, socket.MSG_WAITALL)) == 5000
        server.sendall(b"y" * 700)
        assert len(client.recv(700, socket.MSG_WAITALL)) == 700
        client.close()
        server.close()
        listener.close()
        got = _gather(log, lambda g: len(g) >= 3, port=port)
    by_port = {c.local_port: c for c in got}
    c = by_port[cport]
    s = next(x for x in got if x.local_port == port and x.remote_port == cport)
    assert c.cookie == cookies[cport] and s.cookie == cookies[port]
    assert c.state == pysockopt.TcpState.CLOSE and c.last_state == pysockopt.TcpState.ESTABLISHED
    assert c.info is not None and s.info is not None
    # SYN and FIN count one each in the sequence space (domain.md section 12).
    assert c.info.bytes_acked == 5002 and c.info.bytes_received == 701
    assert s.info.bytes_acked == 701 and s.info.bytes_received == 5001
    assert c.owner is not None and os.getpid() in [p.pid for p in c.owner]
    assert c.lifetime is not None and c.lifetime.at_most is not None
    assert 0 < c.lifetime.at_least <= c.lifetime.at_most and not c.lifetime.upper_bound
    assert c.verdict is Verdict.NORMAL and s.verdict is Verdict.NORMAL
    assert c.local == f"127.0.0.1:{cport}" and c.remote == f"127.0.0.1:{port}"
    (lst,) = [x for x in got if x.remote_port == 0]
    assert lst.remote == "0.0.0.0:*" and lst.verdict is Verdict.UNKNOWN
    assert lst.last_state == pysockopt.TcpState.LISTEN
    assert log.lost == 0


def test_a_connection_born_and_gone_between_looks_has_an_upper_bound_only() -> None:
    with closed_connections(look_interval=0.05, owners=False) as log:
        wait_for(lambda: log.poll(0.05) is not None and log.looks >= 2, timeout=60,
                 what="two looks")
        listener, client, server = _pair()
        port = listener.getsockname()[1]
        client.close()
        server.close()
        listener.close()
        got = _gather(log, lambda g: len(g) >= 3, port=port)
    for c in got:
        assert c.lifetime is not None and c.lifetime.upper_bound, c
        assert c.owner is None
        assert str(c.lifetime).startswith("under ")


def test_poll_returns_an_empty_list_when_nothing_closes_and_port_filters() -> None:
    with closed_connections(port=1) as log:
        assert log.poll(0.05) == []
        listener, client, server = _pair()
        client.close()
        server.close()
        listener.close()
        assert log.poll(0.3) == []
    assert log.poll(0) == []  # closed: nothing, no error


def test_fileno_works_with_selectors_and_iteration_blocks_for_the_next_close() -> None:
    listener, client, server = _pair()
    port = listener.getsockname()[1]
    with closed_connections(owners=False, port=port) as log:
        sel = selectors.DefaultSelector()
        sel.register(log.fileno(), selectors.EVENT_READ)
        client.close()
        assert sel.select(10)
        sel.close()
        first = next(iter(log))
        assert port in (first.local_port, first.remote_port)
        server.close()
        listener.close()


def test_async_for_yields_closes() -> None:
    async def run() -> list[ClosedConnection]:
        got: list[ClosedConnection] = []
        listener, client, server = _pair()
        port = listener.getsockname()[1]
        with closed_connections(owners=False, port=port) as log:
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, client.close)
            loop.call_later(0.1, server.close)
            loop.call_later(0.1, listener.close)
            async for c in log:
                if port in (c.local_port, c.remote_port):
                    got.append(c)
                if len(got) == 3:
                    break
        return got

    got = asyncio.run(asyncio.wait_for(run(), 20))
    assert len(got) == 3


@root
def test_a_full_buffer_is_counted_exactly_and_reconciled(pair: NetnsPair) -> None:
    # Long-lived connections seen by a look, then closed all at once into a tiny buffer: the
    # kernel's drop count and the looks' reconciliation both find every missed close (in a
    # namespace of the test's own, where nothing else closes).
    n = 60

    def make() -> list[tuple[socket.socket, socket.socket, socket.socket]]:
        return [_pair() for _ in range(n)]

    pairs = pair.in_ns("a", make)
    log = ClosedConnections(netns=pair.a, owners=False, look_interval=3600, rcvbuf=1)
    try:
        log.look()  # folded in: every socket tracked
        for listener, client, server in pairs:
            client.close()
            server.close()
            listener.close()
        wait_for(lambda: not [c for c in pysockopt.connections(netns=pair.a)
                              if c.state != pysockopt.TcpState.TIME_WAIT],
                 what="every socket to close")
        time.sleep(0.3)  # the kernel's workqueue sends the last announcements
        seen = log.poll(0)
        log.look()  # every cookie of the first look is missing once ...
        log.look()  # ... and twice: lost, unless it was announced
        assert log.dropped > 0 and log.overflows >= 1
        assert len(seen) + log.dropped == 3 * n
        assert log.missing == log.dropped == log.lost
    finally:
        log.close()


def test_a_signal_storm_during_poll_and_looks_loses_nothing() -> None:
    # SIGALRM every 5 ms while the log waits, drains and looks (dumps): every call retries.
    hits: list[int] = []
    listener, client, server = _pair()
    port = listener.getsockname()[1]

    def close_all() -> None:
        for s in (client, server, listener):
            s.close()

    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
    try:
        with closed_connections(port=port, look_interval=0.02, owners=False) as log:
            # Polls, drains and looks under the storm until it has hit more than 10 times
            # (how long that takes depends on the machine, not on the log).
            wait_for(lambda: log.poll(0.01) is not None and log.looks >= 3 and len(hits) > 10,
                     timeout=60, what="three looks under more than 10 signals")
            close_all()
            got = _gather(log, lambda g: len(g) >= 3)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) > 10
    assert len(got) == 3 and log.lost == 0


def test_verdict_of_reads_shorter_kernels_tcp_info_by_its_length() -> None:
    # The bytes a close carried here, cut to 6.12's 248 and 6.1's 232 (no total_rto fields)
    # and to 2.6's 104 (no byte counters: nothing proven).
    with closed_connections(owners=False) as log:
        listener, client, server = _pair()
        port = listener.getsockname()[1]
        client.sendall(b"v" * 100)
        server.recv(100, socket.MSG_WAITALL)
        client.close()
        server.close()
        listener.close()
        got = _gather(log, lambda g: len(g) >= 3, port=port)
    c = next(x for x in got if x.remote_port == port)
    assert c.info is not None and c.verdict is Verdict.NORMAL
    for size in (248, 232):
        short = pysockopt.TcpInfo.from_bytes(c.info.raw[:size])
        assert verdict_of(short, wqueue=c.wqueue, rqueue=c.rqueue,
                          remote_address=c.remote_address,
                          remote_port=c.remote_port) == (c.verdict, c.evidence)
    assert verdict_of(pysockopt.TcpInfo.from_bytes(c.info.raw[:104])) == (Verdict.UNKNOWN, ())


def test_verdict_of_proves_nothing_without_tcp_info() -> None:
    assert verdict_of(None) == (Verdict.UNKNOWN, ())
    assert str(Verdict.GAVE_UP) == "gave_up"
    assert str(Lifetime(1.0, None)) == "over 1 s"
    assert Lifetime(0.0, 0.5).upper_bound and not Lifetime(0.2, 0.5).upper_bound
    assert Lifetime(0.0, 0.5).seconds == 0.5 and Lifetime(0.2, 0.5).seconds == 0.2
    assert Lifetime(3.0, None).seconds == 3.0


def test_bad_arguments_are_refused_before_subscribing() -> None:
    with pytest.raises(pysockopt.InvalidConfigError):
        closed_connections(port=70000)
    with pytest.raises(pysockopt.InvalidConfigError):
        closed_connections(netns="x", all_netns=True)
    with pytest.raises(pysockopt.InvalidConfigError):
        closed_connections(look_interval=0)
    with pytest.raises(pysockopt.InvalidConfigError):
        closed_connections(owner_share=0)


# --- CloseStats


def _fake(port: int, remote: str, verdict: Verdict, lifetime: Lifetime | None,
          evidence: tuple[tuple[str, int], ...] = ()) -> ClosedConnection:
    return ClosedConnection(socket.AF_INET, pysockopt.TcpState.CLOSE, "10.0.0.1", port, remote,
                            40000, 1, 0, 0, None, None, 0.0, lifetime,
                            (pysockopt.Process(1, "app"),), verdict, evidence)


def test_close_stats_counts_per_port_and_verdict_with_bounded_keys() -> None:
    stats = CloseStats([443], max_keys=4)
    for i in range(50):
        stats.add(_fake(443 if i % 2 else 8080, f"10.1.0.{i}", Verdict.GAVE_UP,
                        Lifetime(0.0, 0.005), (("unacked_bytes", 10),)))
    stats.add(_fake(443, "10.1.0.1", Verdict.NORMAL, Lifetime(2.0, 3.0)))
    stats.add_lost(3)
    t = stats.totals()
    assert t.closes == 51 and t.lost == 3
    assert t.by_port_verdict == {("443", "gave_up"): 25, ("other", "gave_up"): 25,
                                 ("443", "normal"): 1}
    # cardinality: at most max_keys keys plus the one "other" key
    assert len(t.gave_up_by_remote) <= 5 and t.gave_up_by_remote["other"] == 50 - 4
    assert len(t.short_lived) <= 5 and sum(t.short_lived.values()) == 50
    assert t.unacked_by_port_owner == {("443", "app"): 25, ("other", "app"): 25}
    assert t.lifetime_count == 51 and len(t.lifetime_buckets) == len(LIFETIME_BUCKETS)
    assert t.lifetime_buckets[LIFETIME_BUCKETS.index(0.01)] == 50
    assert t.lifetime_buckets[-1] == 51
    with pytest.raises(pysockopt.InvalidConfigError):
        stats.add_lost(-1)


def test_close_totals_since_an_earlier_one_is_one_interval() -> None:
    stats = CloseStats([443])
    stats.add(_fake(443, "10.1.0.1", Verdict.NORMAL, Lifetime(0.0, 0.5)))
    earlier = stats.totals()
    stats.add(_fake(443, "10.1.0.2", Verdict.GAVE_UP, Lifetime(1.0, 2.0)))
    stats.set_ports([8080])
    stats.add(_fake(8080, "10.1.0.2", Verdict.GAVE_UP, None))
    stats.add(_fake(443, "10.1.0.2", Verdict.GAVE_UP, None))
    stats.add_lost(2)
    delta = stats.totals().since(earlier)
    assert delta.closes == 3 and delta.lost == 2
    assert delta.by_port_verdict == {("443", "gave_up"): 1, ("8080", "gave_up"): 1,
                                     ("other", "gave_up"): 1}
    assert delta.gave_up_by_remote == {"10.1.0.2": 3}
    assert delta.short_lived == {} and delta.lifetime_count == 1
    assert delta.lifetime_buckets[LIFETIME_BUCKETS.index(10.0)] == 1
    assert delta.lifetime_buckets[LIFETIME_BUCKETS.index(1.0)] == 1  # at_least 1.0


def test_close_stats_sums_the_bytes_of_real_closes() -> None:
    stats = CloseStats()
    with closed_connections(owners=False) as log:
        listener, client, server = _pair()
        port = listener.getsockname()[1]
        client.sendall(b"z" * 1000)
        server.recv(1000, socket.MSG_WAITALL)
        client.close()
        server.close()
        got = _gather(log, lambda g: len(g) >= 2, port=port)
        listener.close()
    for c in got:
        stats.add(c)
    t = stats.totals()
    assert t.bytes_acked == 1002 + 1 and t.bytes_received == 1 + 1001
    assert t.by_port_verdict == {("other", "normal"): 2}


# --- the CLI


def test_cli_json_is_one_object_per_close_and_a_summary_without_cookie() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def churn() -> None:
        time.sleep(0.5)
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = listener.accept()
            c.close()
            s.close()

    t = threading.Thread(target=churn)
    t.start()
    out = io.StringIO()
    status = main(["closed", "--port", str(port), "--json", "--count", "6", "--for", "20"], out)
    t.join()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    closes, summary = lines[:-1], lines[-1]
    assert status == 0 and len(closes) == 6
    conn_keys = set(pysockopt.connections(port=port)[0].as_dict())
    for c in closes:
        assert isinstance(c["cookie"], int) and c["cookie"] > 0
        assert c["state"] == "CLOSE" and c["verdict"] == "normal"
        assert {"local_address", "local_port", "remote_address", "remote_port", "info",
                "netns", "rqueue", "wqueue", "family"} <= set(c)
        assert conn_keys - {"uid", "inode", "timer", "expires_ms", "retrans", "drops"} <= set(c)
        assert "bytes_acked" in c["info"]
    listener.close()
    assert "cookie" not in summary["summary"] and summary["summary"]["seen"] == 6
    assert summary["summary"]["lost"] == 0


def test_cli_text_ends_with_the_summary_and_bad_usage_is_2() -> None:
    out = io.StringIO()
    assert main(["closed", "--port", "1", "--for", "0.3"], out) == 0
    assert out.getvalue().splitlines()[-1] == "0 close(s) seen, 0 lost"
    assert main(["closed", "--count", "0"], io.StringIO()) == 2
    assert main(["closed", "--for", "-1"], io.StringIO()) == 2
    assert main(["closed", "--netns", "x", "--all-netns"], io.StringIO()) == 2


# --- staged in private namespaces (root)


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    with NetnsPair() as p:
        yield p


def _connected(p: NetnsPair, port: int = 5555) -> tuple[socket.socket, socket.socket]:
    listener = p.socket("b")
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((p.addr_b, port))
    listener.listen(16)
    client = p.socket("a")
    client.settimeout(10)
    client.connect((p.addr_b, port))
    server, _ = listener.accept()
    listener.close()
    return client, server


def _one(log: ClosedConnections, local_port: int) -> ClosedConnection:
    got = _gather(log, lambda g: any(x.local_port == local_port for x in g), port=local_port)
    return next(x for x in got if x.local_port == local_port)


@root
def test_plain_close_is_normal(pair: NetnsPair) -> None:
    with closed_connections(netns=pair.a, look_interval=0.1) as log:
        client, server = _connected(pair)
        client.sendall(b"a" * 3000)
        server.recv(3000, socket.MSG_WAITALL)
        port = client.getsockname()[1]
        server.close()
        client.recv(10)  # the FIN
        client.close()
        c = _one(log, port)
    assert c.verdict is Verdict.NORMAL, c
    assert c.netns is not None and c.netns.name == pair.a
    assert c.info is not None and c.info.bytes_acked == 3002


@root
def test_so_linger_zero_is_a_reset_with_counters_reset(pair: NetnsPair) -> None:
    with closed_connections(netns=pair.a, look_interval=0.1) as log:
        client, server = _connected(pair)
        port = client.getsockname()[1]
        client.sendall(b"q" * 1000)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        (c,) = _gather(log, lambda g: len(g) >= 1)
        server.close()
    assert c.verdict is Verdict.RESET and dict(c.evidence) == {"counters_reset": 1}
    assert c.remote_port == 0 and c.remote_address == pair.addr_b  # tcp_disconnect's doing
    assert c.last_state == pysockopt.TcpState.ESTABLISHED or c.last_state is None
    del port


@root
def test_sock_destroy_is_a_reset_announced_when_the_owner_closes(pair: NetnsPair) -> None:
    with closed_connections(netns=pair.a, look_interval=0.1) as log:
        client, server = _connected(pair)
        client.sendall(b"k" * 10)
        server.recv(10)
        port = client.getsockname()[1]
        (target,) = [c for c in pysockopt.connections(netns=pair.a) if c.local_port == port]
        assert pysockopt.destroy([target]) == [None]
        # Destroyed but still held: unhashed (gone from the dumps), not yet freed, not lost.
        time.sleep(0.5)
        assert [c for c in log.poll(0.3) if c.local_port == port] == []
        assert log.missing == 0
        client.close()
        c = _one(log, port)
        server.close()
    assert c.cookie == target.cookie
    assert c.verdict is Verdict.RESET, c
    ev = dict(c.evidence)
    assert ev["delivered"] == 2 and ev["data_segs_out"] == 1  # SYN + data; no FIN delivered
    assert log.missing == 0


@root
@pytest.mark.slow
def test_keepalive_timeout_gave_up_after_probes(pair: NetnsPair) -> None:
    with closed_connections(netns=pair.a, look_interval=0.2) as log:
        client, server = _connected(pair)
        pysockopt.apply_keepalive(client, pysockopt.KeepaliveConfig(1, 1, 2))
        port = client.getsockname()[1]
        pair.link_down("b")
        wait_for(lambda: pysockopt.tcp_info(client).state == pysockopt.TcpState.CLOSE,
                 timeout=30, what="the keepalive timeout")
        client.close()
        c = _one(log, port)
        server.close()
    assert c.verdict is Verdict.GAVE_UP, c
    assert dict(c.evidence)["probes"] == 2 and dict(c.evidence)["retransmits"] == 0


@root
@pytest.mark.slow
def test_user_timeout_with_data_in_flight_gave_up_with_unacked_bytes(pair: NetnsPair) -> None:
    with closed_connections(netns=pair.a, look_interval=0.2) as log:
        client, server = _connected(pair)
        client.setsockopt(socket.IPPROTO_TCP, 18, 2000)  # TCP_USER_TIMEOUT
        port = client.getsockname()[1]
        pair.link_down("b")
        client.sendall(b"z" * 50000)
        wait_for(lambda: pysockopt.tcp_info(client).state == pysockopt.TcpState.CLOSE,
                 timeout=30, what="the user timeout")
        client.close()
        c = _one(log, port)
        server.close()
    assert c.verdict is Verdict.GAVE_UP, c
    ev = dict(c.evidence)
    assert ev["retransmits"] > 0 and ev["total_rto_time"] > 0
    # The send queue held all 50000 bytes; the evidence claims one less (a FIN may be in it).
    assert ev["unacked_bytes"] == 49999 and c.wqueue == 50000
    assert c.info is not None and c.info.unacked == 0  # the kernel purged the write queue


@root
def test_reset_by_the_peer_with_data_unacknowledged(pair: NetnsPair) -> None:
    # The server stops reading; the client's data fills its window; the server resets.
    with closed_connections(netns=pair.a, look_interval=0.1) as log:
        client, server = _connected(pair)
        client.setblocking(False)
        sent = 0
        try:
            while True:
                sent += client.send(b"w" * 65536)
        except BlockingIOError:
            pass
        port = client.getsockname()[1]
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()
        wait_for(lambda: pysockopt.tcp_info(client).state == pysockopt.TcpState.CLOSE,
                 what="the reset")
        client.close()
        c = _one(log, port)
    assert c.verdict is Verdict.UNACKED_DATA, c
    ev = dict(c.evidence)
    assert 0 < ev["unacked_bytes"] <= sent


def _collect(stream: io.TextIOBase | None, into: list[str]) -> None:
    assert stream is not None
    for text in iter(stream.readline, ""):
        into.append(text)


@root
def test_differential_with_ss_dash_e_in_the_same_namespace(pair: NetnsPair) -> None:
    port = 7000
    sentinel = 7001
    ss = subprocess.Popen(["ip", "netns", "exec", pair.a, "stdbuf", "-oL", "ss", "-E", "-t",
                           "-n", "-e", "-H"], stdout=subprocess.PIPE, text=True)
    ours = subprocess.Popen([sys.executable, "-m", "pysockopt", "closed", "--netns", pair.a,
                             "--json"], stdout=subprocess.PIPE, text=True)
    ss_lines: list[str] = []
    our_lines: list[str] = []
    readers = [threading.Thread(target=_collect, args=(ss.stdout, ss_lines)),
               threading.Thread(target=_collect, args=(ours.stdout, our_lines))]
    for r in readers:
        r.start()
    sent: dict[int, int] = {}
    cookies: dict[tuple[int, int], int] = {}
    try:
        def ping() -> bool:
            lst = pair.in_ns("a", lambda: socket.create_server(("127.0.0.1", sentinel)))
            c = pair.in_ns("a", lambda: socket.create_connection(("127.0.0.1", sentinel)))
            s, _ = lst.accept()
            c.close()
            s.close()
            lst.close()
            time.sleep(0.2)
            return (any(f":{sentinel}" in x for x in ss_lines)
                    and any(f'"local_port": {sentinel}' in x for x in our_lines))

        wait_for(ping, timeout=30, what="both subscribers to be listening")
        listener = pair.in_ns("a", lambda: socket.create_server(("127.0.0.1", port)))
        n = 40
        for i in range(n):
            c = pair.in_ns("a", lambda: socket.create_connection(("127.0.0.1", port)))
            s, _ = listener.accept()
            c.sendall(b"d" * (100 + i))
            s.recv(1000)
            s.sendall(b"e" * i)
            if i:
                c.recv(1000)
            sent[c.getsockname()[1]] = 100 + i
            for conn in pysockopt.connections(netns=pair.a, port=port):
                cookies[(conn.local_port, conn.remote_port)] = conn.cookie
            c.close()
            s.close()
        listener.close()
        wait_for(lambda: sum(f":{port}" in x for x in ss_lines) >= 2 * n + 1, timeout=20,
                 what="ss -E to print every close")
        wait_for(lambda: sum(f'"local_port": {port}' in x or f'"remote_port": {port}' in x
                             for x in our_lines) >= 2 * n + 1, timeout=20,
                 what="pysockopt closed to print every close")
    finally:
        ss.terminate()
        ours.terminate()
        ss.wait(10)
        ours.wait(10)
        for r in readers:
            r.join(10)
    theirs = set()
    for x in ss_lines:
        fields = x.split()
        if f":{port}" not in x:
            continue
        state, local, peer = fields[0], fields[3], fields[4]
        cookie = int(next(f for f in fields if f.startswith("sk:"))[3:], 16)
        theirs.add((state, local, peer, cookie))
    mine = []
    objects = [json.loads(x) for x in our_lines]
    assert "summary" in objects[-1] and objects[-1]["summary"]["lost"] == 0
    for o in objects[:-1]:
        if port not in (o["local_port"], o["remote_port"]):
            continue
        state = "UNCONN" if o["state"] == "CLOSE" else o["state"]
        remote_port = o["remote_port"] or "*"
        mine.append((state, f"{o['local_address']}:{o['local_port']}",
                     f"{o['remote_address']}:{remote_port}", o["cookie"]))
        if o["local_port"] in sent:  # a client: what it sent, SYN and FIN
            assert o["info"]["bytes_acked"] == sent[o["local_port"]] + 2
            assert o["info"]["bytes_received"] == sent[o["local_port"]] - 100 + 1
        if o["remote_port"]:
            key = (o["local_port"], o["remote_port"])
            assert o["cookie"] == cookies[key], "the cookie a dump reported before the close"
    assert len(mine) == len(set(mine)) == 2 * n + 1  # each exactly once
    assert set(mine) == theirs


@root
def test_all_netns_attributes_closes_to_their_namespace(pair: NetnsPair) -> None:
    with closed_connections(all_netns=True, owners=False, look_interval=0.2) as log:
        inodes = {ns.name: ns.inode for ns in log.netns if ns is not None}
        assert pair.a in inodes and pair.b in inodes
        for side in ("a", "b"):
            lst = pair.in_ns(side, lambda: socket.create_server(("127.0.0.1", 7100)))
            c = pair.in_ns(side, lambda: socket.create_connection(("127.0.0.1", 7100)))
            s, _ = lst.accept()
            c.close()
            s.close()
            lst.close()
        got = _gather(log, lambda g: len(g) >= 6, port=7100)
    names = sorted(c.netns.name or "" for c in got if c.netns is not None)
    assert names == sorted([pair.a] * 3 + [pair.b] * 3)


@root
def test_a_namespace_deleted_while_followed_ends_the_stream() -> None:
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    name = f"pso-cl-{os.urandom(3).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        log = closed_connections(netns=name, look_interval=0.1)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    with log:
        ended = threading.Event()

        def drain() -> None:
            for _ in log:
                pass
            ended.set()

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        assert ended.wait(20), "the stream did not end"
        assert log.netns == () and log.lost == 0


@root
def test_non_root_sees_its_namespace_and_roots_closes_but_cannot_follow_others(
        pair: NetnsPair) -> None:
    if unprivileged_reason():
        pytest.skip(unprivileged_reason() or "")
    port = 7200

    def child() -> tuple[list[int], str | None, list[str]]:
        with closed_connections(owners=False) as log:
            got = _gather(log, lambda g: len(g) >= 4, timeout=40, port=port)
        try:
            closed_connections(netns=f"/run/netns/{pair.b}")
            refused = None
        except NetnsPermissionError as err:
            refused = err.check
        with closed_connections(all_netns=True, owners=False) as every:
            notes = list(every.notes)
        return [c.info.bytes_acked or 0 if c.info else -1 for c in got], refused, notes

    done: list[tuple[list[int], str | None, list[str]]] = []
    t = threading.Thread(target=lambda: done.append(as_unprivileged(child, netns=pair.a,
                                                                     timeout=60)))
    t.start()
    lst = pair.in_ns("a", lambda: socket.create_server(("127.0.0.1", port)))
    while t.is_alive():  # root's connections close until the child has seen some
        c = pair.in_ns("a", lambda: socket.create_connection(("127.0.0.1", port)))
        s, _ = lst.accept()
        c.sendall(b"r" * 10)
        s.recv(10)
        c.close()
        s.close()
        t.join(0.2)
    lst.close()
    (acked, refused, notes), = done
    assert 12 in acked  # root's own client: 10 bytes, SYN and FIN, full tcp_info
    assert refused == "setns"
    assert any("network namespace(s) could not be" in n for n in notes)


@root
def test_a_timewait_socket_listed_after_its_announcement_is_not_counted_lost(
        pair: NetnsPair) -> None:
    # The server closes first; the client's ACK turns it (an orphan) into a timewait socket
    # in substate FIN_WAIT2, listed under the announced socket's cookie. When the client closes
    # too, it moves to TIME_WAIT and leaves the tracked states: not a lost close.
    with closed_connections(netns=pair.a, look_interval=3600, owners=False) as log:
        def make() -> tuple[socket.socket, socket.socket, socket.socket]:
            return _pair(7300)

        listener, client, server = pair.in_ns("a", make)
        sport = server.getsockname()[1]
        cport = client.getsockname()[1]
        server.close()
        _gather(log, lambda g: any(c.remote_port == cport for c in g))
        wait_for(lambda: [c for c in pysockopt.connections(netns=pair.a, port=cport)
                          if c.state == pysockopt.TcpState.FIN_WAIT2], what="FIN_WAIT2")
        log.look()  # lists the timewait socket, FIN_WAIT2, with the announced cookie
        client.close()
        listener.close()
        # both announced before the looks (they count a socket lost one look after missing)
        _gather(log, lambda g: {(c.local_port, c.remote_port) for c in g}
                >= {(cport, 7300), (7300, 0)})
        log.look()
        log.look()
        assert log.missing == 0 and log.lost == 0
        del sport


def test_closing_the_log_releases_every_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with closed_connections(owners=False) as log:
            log.poll(0)
        log.close()  # again: nothing happens
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ValueError):
        log.fileno()


def test_cli_netns_errors_are_said_in_the_options_words(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert main(["closed", "--netns", "/tmp", "--for", "1"], io.StringIO()) == 2
    assert "--netns /tmp: not a network namespace (a directory)" in capsys.readouterr().err


# --- driven by the looks of diagnose, watch and the exporter (CloseFeed)


def _fed_look(feed: CloseFeed, port: int, owners: OwnerCache | None = None) -> Look:
    return look(None, Needs("rules", port), owners=owners, feed=feed)


def _looks_until(feed: CloseFeed, port: int, n: int,
                 owners: OwnerCache | None = None) -> list[ClosedConnection]:
    """Take looks (reading between them) until ``n`` closes were folded in (10 s at most)."""
    deadline = time.monotonic() + 10
    while len(feed.closes) < n:
        assert time.monotonic() < deadline, feed.closes
        feed.wait(0.05)
        _fed_look(feed, port, owners)
    return list(feed.closes)


def test_a_feed_joins_closes_with_the_looks_that_listed_them() -> None:
    # No look of its own: what a close says of its lifetime comes from the caller's looks.
    listener, old_client, old_server = _pair()
    port = listener.getsockname()[1]
    with CloseFeed(port=port, keep=True) as feed:
        first = _fed_look(feed, port)
        assert first.closes is None  # a namespace's first look: no interval yet
        seen_client = socket.create_connection(listener.getsockname())
        seen_server, _ = listener.accept()
        time.sleep(0.05)
        second = _fed_look(feed, port)
        assert second.closes is not None and second.closes.closes == 0
        brief = socket.create_connection(listener.getsockname())
        brief_server, _ = listener.accept()
        for s in (brief, brief_server, seen_client, seen_server, old_client, old_server):
            s.close()
        closes = _looks_until(feed, port, 6)
    listener.close()
    assert len(closes) == 6, closes
    lifetimes = [c.lifetime for c in closes]
    assert all(t is not None for t in lifetimes), closes
    # Born before the first look: no upper bound; listed by the second look only: an interval;
    # born and gone between two looks: only an upper bound.
    assert sum(1 for t in lifetimes if t and t.at_most is None) == 2, lifetimes
    assert sum(1 for t in lifetimes if t and t.upper_bound) == 2, lifetimes
    proper = [t for t in lifetimes if t and t.at_most is not None and not t.upper_bound]
    assert len(proper) == 2 and all(0 < t.at_least <= (t.at_most or 0) for t in proper), \
        lifetimes
    assert all(c.owner is None for c in closes)  # no lookup named them: "unknown"
    assert feed.lost == 0


def test_a_feed_names_the_owner_a_lookup_found_while_the_socket_lived() -> None:
    # The owner comes from what the looks' OwnerCache already found (here, as a CLOSE_WAIT
    # rule would look it up), never from a walk of its own.
    listener, client, server = _pair()
    port = listener.getsockname()[1]
    owners = OwnerCache()
    with CloseFeed(port=port, owners=owners, keep=True) as feed:
        owners.new_look()
        lk = _fed_look(feed, port, owners)
        ours = [c for c in lk.listeners + lk.sockets if c.local_port == port and c.inode]
        lk.owners.lookup(ours)  # the listener's owner, found while it lives
        walks = owners.walks
        owners.new_look()
        listener.close()
        client.close()
        server.close()
        closes = _looks_until(feed, port, 3, owners)
        assert owners.walks == walks  # the log walked nothing
    named = {c.local_port: c.owner for c in closes if c.remote_port == 0}
    assert named and all(o and o[0].pid == os.getpid() for o in named.values()), closes
    assert all(c.owner is None for c in closes if c.remote_port != 0)


@root
def test_a_feed_counts_the_closes_a_full_buffer_dropped(pair: NetnsPair) -> None:
    # The smallest receive buffer: what is not read is dropped by the kernel and counted
    # into the interval's lost closes; read + lost is every close of the namespace.
    n = 40

    def scene() -> list[socket.socket]:
        listener = socket.create_server((pair.addr_a, 0))
        held = [listener]
        for _ in range(n):
            c = socket.create_connection(listener.getsockname())
            s, _ = listener.accept()
            held += [c, s]
        return held

    ns = next(x for x in namespaces() if x.name == pair.a)
    with CloseFeed(rcvbuf=1) as feed:
        look(ns, Needs("rules"), feed=feed)
        held = pair.in_ns("a", scene)
        look(ns, Needs("rules"), feed=feed)
        for s in held:
            s.close()
        time.sleep(0.5)
        totals = [t for t in (look(ns, Needs("rules"), feed=feed).closes for _ in range(3))
                  if t is not None]
        fed, = feed._fed.values()
        drops = fed.sub.kernel_drops()
    closes = sum(t.closes for t in totals)
    lost = sum(t.lost for t in totals)
    assert drops > 0  # the kernel's own count, not only the reconciliation's
    assert lost > 0, totals
    assert closes + lost == 2 * n + 1, (closes, lost)


def _ns_look(feed: CloseFeed, ns: object, owners: OwnerCache | None = None) -> Look:
    if owners is not None:
        owners.new_look()
    return look(ns, Needs("rules"), owners=owners, feed=feed)  # type: ignore[arg-type]


@root
@pytest.mark.parametrize(("named", "looks"), [(True, 12), (False, 3), (False, 12)])
def test_a_reset_socket_its_process_still_holds_is_not_lost_nor_short_lived(
        pair: NetnsPair, named: bool, looks: int) -> None:
    # A socket reset while its process holds the descriptor leaves the dumps at once, but
    # the kernel announces its close only when that descriptor closes: not a close the log
    # missed, and when it comes its lifetime is the looks' interval, not "under" a look.
    ns = next(x for x in namespaces() if x.name == pair.a)

    def make() -> tuple[socket.socket, socket.socket, socket.socket]:
        listener = socket.create_server((pair.addr_a, 0))
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        return listener, client, server

    owners = OwnerCache() if named else None
    with CloseFeed(owners=owners, keep=True) as feed:
        _ns_look(feed, ns, owners)
        listener, client, server = pair.in_ns("a", make)
        cport = client.getsockname()[1]
        lk = _ns_look(feed, ns, owners)
        if named:  # as a rule on it would: its owner found while it lives
            mine = [c for c in pysockopt.connections(netns=pair.a, port=cport)
                    if c.local_port == cport]
            assert mine and lk.owners.lookup(mine)[mine[0].inode]
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()  # the client gets the RST, and still holds its descriptor
        wait_for(lambda: not [c for c in pysockopt.connections(netns=pair.a, port=cport)
                              if c.local_port == cport], what="the reset client unhashed")
        # 12: more looks than the held check waits for when no look named the holder: then
        # it is counted lost for a while, and its announcement takes that back.
        for _ in range(looks):
            feed.wait(0.05)
            _ns_look(feed, ns, owners)
        assert feed.lost == int(not named and looks == 12)
        client.close()
        deadline = time.monotonic() + 10
        while not any(c.local_port == cport for c in feed.closes):
            assert time.monotonic() < deadline, feed.closes
            feed.wait(0.05)
            last = _ns_look(feed, ns, owners)
        listener.close()
        fed, = feed._fed.values()
        assert fed.lost_now() == 0
        assert feed.lost == int(not named and looks == 12)  # a counter: it only grows
    ended = [c for c in feed.closes if c.local_port == cport]
    assert len(ended) == 1, feed.closes
    lifetime = ended[0].lifetime
    assert lifetime is not None and not lifetime.upper_bound and lifetime.at_least > 0, lifetime
    assert last.closes is not None and last.closes.short_lived == {}, last.closes


@root
def test_short_lived_churn_counts_each_connection_once_by_its_outbound_end(
        pair: NetnsPair) -> None:
    # Loopback churn: each connection has two ends closing; the accepted one is not a
    # connection "to" its client's address. No look saw them: their owner is unknown (the
    # close names none, and another process's sockets to the same address do not say).
    ns = next(x for x in namespaces() if x.name == pair.a)
    n = 30

    def churn() -> int:
        listener = socket.create_server((pair.addr_a, 0))
        for _ in range(n):
            c = socket.create_connection(listener.getsockname())
            s, _ = listener.accept()
            c.close()
            s.close()
        port: int = listener.getsockname()[1]
        listener.close()
        return port

    with CloseFeed(keep=True) as feed:
        look(ns, Needs("rules"), feed=feed)
        held = pair.in_ns("a", lambda: socket.create_server((pair.addr_a, 0)))
        look(ns, Needs("rules"), feed=feed)  # a listener a look saw: its accepted ends
        port = pair.in_ns("a", churn)
        deadline = time.monotonic() + 10
        while sum(1 for c in feed.closes if port in (c.local_port, c.remote_port)) < 2 * n:
            assert time.monotonic() < deadline, len(feed.closes)
            feed.wait(0.05)
            last = look(ns, Needs("rules"), feed=feed)
        held.close()
    totals = feed.stats.totals()
    assert totals.short_lived == {(pair.addr_a, "unknown"): n}, totals.short_lived
    assert last.closes is not None



@root
def test_a_feeds_state_per_namespace_stays_bounded_over_many_looks(pair: NetnsPair) -> None:
    # Each look folds, each close is read: what a namespace keeps is what is still referenced
    # (the followed sockets, the closes of the interval), not one entry per look or close ever.
    ns = next(x for x in namespaces() if x.name == pair.a)
    per_look, looks = 5, 80

    def make() -> tuple[socket.socket, socket.socket, socket.socket]:
        listener = socket.create_server((pair.addr_a, 0))
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        return listener, client, server

    def churn(listener: socket.socket) -> None:
        for _ in range(per_look):
            c = socket.create_connection(listener.getsockname())
            s, _ = listener.accept()
            c.close()
            s.close()

    with CloseFeed() as feed:
        look(ns, Needs("rules"), feed=feed)
        listener, client, server = pair.in_ns("a", make)  # followed all along
        for _ in range(looks):
            pair.in_ns("a", lambda: churn(listener))
            feed.wait(0.01)
            look(ns, Needs("rules"), feed=feed)
        fed, = feed._fed.values()
        sizes = {f"{owner}.{name}": len(value)
                 for owner, obj in (("fed", fed), ("sub", fed.sub))
                 for name, value in vars(obj).items()
                 if isinstance(value, (list, dict, set))}
        assert feed.stats.totals().closes >= looks * per_look * 2
        for s in (listener, client, server):
            s.close()
    # 3 sockets followed; at most one interval's closes (2 per connection) remembered.
    assert all(n <= 2 * per_look + 3 for n in sizes.values()), sizes


def test_a_feeds_read_error_is_said_once_and_dropped_with_its_namespace() -> None:
    # A read that fails (here: the subscriber's descriptor made a pipe for one look, a real
    # ENOTSOCK) is said by the next look's errors, not by every look after; and a namespace
    # no longer followed takes its error with it.
    def failing_look(feed: CloseFeed, fd: int) -> None:
        saved = os.dup(fd)
        r, w = os.pipe()
        try:
            os.dup2(r, fd)
            look(None, Needs("rules"), feed=feed)
            os.dup2(saved, fd)
        finally:
            for x in (saved, r, w):
                os.close(x)

    with CloseFeed() as feed:
        first = look(None, Needs("rules"), feed=feed)
        fd = feed._fed[first.inode].sub.fd
        failing_look(feed, fd)
        assert "Socket operation on non-socket" in feed.errors[first.inode], feed.errors
        look(None, Needs("rules"), feed=feed)
        assert first.inode not in feed.errors, feed.errors
        failing_look(feed, fd)
        assert first.inode in feed.errors
        feed.keep([])
        assert feed.errors == {}


def test_the_reader_thread_says_an_unexpected_failure_and_keeps_reading() -> None:
    # A read that raises something other than OSError (a decoding bug, say: here the
    # namespace's read made to raise once) is said in errors; the thread reads on.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with CloseFeed(port=port) as feed:
        first = look(None, Needs("rules", port), feed=feed)
        fed = feed._fed[first.inode]
        real = fed.read
        calls = []

        def broken(owners: OwnerCache | None) -> None:
            calls.append(1)
            fed.read = real  # type: ignore[method-assign]
            raise RuntimeError("a decoding bug")

        fed.read = broken  # type: ignore[method-assign]
        feed.start_reader()
        socket.create_connection(listener.getsockname()).close()
        wait_for(lambda: first.inode in feed.errors, 10, "the failure said")
        assert "RuntimeError: a decoding bug" in feed.errors[first.inode]
        socket.create_connection(listener.getsockname()).close()
        wait_for(lambda: fed.since, 10, "a close read by the thread after the failure")
        assert feed._reader is not None and feed._reader.is_alive() and calls == [1]
    listener.close()
