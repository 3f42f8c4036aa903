"""One look: diagnose() and the exporter read a namespace the same way and find the same things.

(a) On one staged scene, every rule that fires in ``diagnose()`` fires as
``pysockopt_finding{code=...}`` in a scrape (the interval rules from the second scrape on).
(b) ``diagnose(netns=X)`` enters X once per look, in one native trip (strace counts setns), and
reads each /proc file once; a scrape enters each namespace once. (c) A look of several
namespaces walks /proc/*/fd at most once.
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

pytest.importorskip("prometheus_client")  # the test extra installs it

from closescene import closes_once
from helpers import run_cli
from netns import have_netns, ip, run_in_netns
from prometheus_client.parser import text_string_to_metric_families
from sockpiles import Pile
from waiting import wait_for

import pysockopt.prometheus as prom
from pysockopt import TcpState, Thresholds, connections, diagnose
from pysockopt.cli import main
from pysockopt.cli.diagnose import sampled
from pysockopt.host import look, owners
from pysockopt.host.closed import CloseFeed
from pysockopt.host.namespaces import namespaces
from pysockopt.host.rules import RULES

ROOT = pathlib.Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Rules no scene on loopback in a private namespace can set off, and why. Each is still run
#: by both paths; the test only cannot show it firing.
NOT_STAGED = {
    # A half-open handshake needs a peer that never answers the SYN+ACK: on loopback the
    # kernel answers it itself (covered with raw SYNs over a veth pair in test_diagnose.py).
    "SYN_RECV_PILE": "SYN_RECV needs a peer that never answers (a veth pair, not loopback)",
    "SYN_FLOOD_NOW": "as SYN_RECV_PILE: needs spoofed SYNs over a veth pair",
    # Read only in the initial namespace: staging it would change the host's own limits.
    "ORPHAN_PRESSURE": "net.ipv4.tcp_max_orphans exists only in the initial namespace",
    "TCP_MEMORY_PRESSURE": "net.ipv4.tcp_mem exists only in the initial namespace",
    "CONNTRACK_NEAR_FULL": "nf_conntrack_max is the host's (read-only in a namespace)",
}
#: Rules the exporter does not run (computed from the rule rows, not listed by hand): those
#: that need every socket decoded, which a scrape never does. None today: the ports in use per
#: destination are counted in C.
NOT_SCRAPED = {r.code for r in RULES} - {r.code for r in look.scraped_rules()}


@pytest.fixture
def netns() -> Iterator[str]:
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    name = f"pso-look-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_ns(netns: str, fn: Callable[[], T]) -> T:
    return run_in_netns(netns, fn)


def _in(netns: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *cmd], check=True, capture_output=True)


def _codes(text: str) -> set[str]:
    return {s.labels["code"] for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "pysockopt_finding"}


# --- (a) diagnose and the exporter find the same things


#: Low thresholds so that a scene of a few dozen sockets sets every stageable rule off.
_T = Thresholds(close_wait=3, fin_wait1=2, fin_wait2=3, last_ack=2, retrans=2, idle_seconds=1,
                close_wait_growth=3, retrans_ratio=0.01, aborts=2,
                time_wait_buckets_ratio=0.8, short_lived=5, peers_dying=3, unacked_closes=3)


def _stuck_behind_data(pile: Pile, closer: str) -> socket.socket:
    """A pair whose ``closer`` side closes with its FIN stuck behind data nobody reads.

    "client": the client ends in FIN_WAIT1; "server": the client shut its side first, so
    the server ends in LAST_ACK. Either way the reader's window is full, so the FIN waits.
    """
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", pile.port))
    server, _ = pile.listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer, reader = (client, server) if closer == "client" else (server, client)
    if closer == "server":
        client.shutdown(socket.SHUT_WR)
    writer.setblocking(False)
    try:
        while True:
            writer.send(b"x" * 65536)
    except BlockingIOError:
        pass
    writer.close()
    pile.held.append(reader)
    return reader


def _stage(netns: str) -> tuple[list[Pile], Pile, list[socket.socket]]:
    for key, value in (("net.ipv4.ip_local_port_range", "40000 40199"),
                       ("net.ipv4.tcp_max_tw_buckets", "130")):
        _in(netns, "sysctl", "-q", f"{key}={value}")

    def scene() -> tuple[list[Pile], Pile, list[socket.socket]]:
        leak = Pile()
        leak.close_wait(4)           # CLOSE_WAIT_PILE (server side), FIN_WAIT2_PILE (clients)
        full = Pile(backlog=1)
        full.unaccepted(3)           # ACCEPT_QUEUE_FULL, LISTEN_DROPS
        tw = Pile()
        tw.time_wait(110)            # TIME_WAIT_PRESSURE (110/200), TIME_WAIT_BUCKETS (110/130)
        idle = Pile()
        idle.established(2)          # IDLE_NO_KEEPALIVE once silent for a second
        stuck = Pile()
        for _ in range(2):
            _stuck_behind_data(stuck, "client")   # FIN_WAIT1_PILE
        lastack = Pile()
        for _ in range(2):
            _stuck_behind_data(lastack, "server")  # LAST_ACK_PILE
        dead = Pile()
        clients = [pair[0] for pair in dead.established(20)]
        return [leak, full, tw, idle, stuck, lastack, dead], dead, clients

    piles, dead, clients = in_ns(netns, scene)
    # RETRANSMITTING, RETRANSMITS_RISING: the peer stops answering (packets to it dropped).
    _in(netns, "nft", "add", "table", "inet", "pso_look")
    # Dropped on the way in: dropped on the way out, a segment counts as never sent and the
    # kernel arms the zero-window probe timer instead of the retransmit timer.
    _in(netns, "nft", "add", "chain", "inet", "pso_look", "in",
        "{ type filter hook input priority 0 ; }")
    _in(netns, "nft", "add", "rule", "inet", "pso_look", "in", "tcp", "dport",
        str(dead.port), "drop")
    for c in clients:
        c.send(b"ping")
    return piles, piles[0], clients


def _settled(netns: str, dead_port: int) -> bool:
    """Whether the scene is steady: retransmitting at the threshold, idle pairs past a second."""
    est = in_ns(netns, lambda: connections(states=TcpState.ESTABLISHED, with_info=True))
    retrans = [c for c in est if c.remote_port == dead_port and c.retrans >= _T.retrans]
    idle = [c for c in est if c.info is not None and c.info.last_data_recv is not None
            and c.info.last_ack_recv is not None
            and min(c.info.last_data_recv, c.info.last_ack_recv) > 1500]
    return len(retrans) == 20 and len(idle) >= 2


def _abort_on_data(netns: str, n: int) -> None:
    """``n`` connections reset because data arrived after close (TcpExt TCPAbortOnData)."""
    def run() -> None:
        with Pile() as pile:
            for client, server in pile.established(n):
                # Shut, not closed: an orphan would become a timewait socket, which resets
                # late data without counting it.
                server.shutdown(socket.SHUT_RDWR)
                time.sleep(0.05)
                client.send(b"late")

    in_ns(netns, run)


@pytest.mark.root
def test_every_rule_diagnose_finds_is_a_finding_in_a_scrape(netns: str) -> None:
    piles, leak, _ = _stage(netns)
    feed = CloseFeed()
    try:
        dead_port = piles[-1].port
        wait_for(lambda: _settled(netns, dead_port), 20, "retransmits and idle pairs")
        collector = prom.SocketCollector(netns=netns, thresholds=_T)
        # diagnose's look as watch takes it: driving a closed-connection log (the rules on
        # closes read it from the second look on, as a scrape's from the second scrape).
        ns = next(n for n in namespaces() if n.name == netns)
        plain = {f.code for f in diagnose(netns=netns, thresholds=_T).findings}
        first = sampled(None, None, ns, feed, thresholds=_T)[0]
        assert {f.code for f in first.findings} == plain
        scraped_first = _codes(prom.exposition(collector).decode())
        # Between the two looks: CLOSE_WAIT grows, connections are aborted, the dead
        # peer's connections retransmit again, connections churn and others are given up
        # with data unacknowledged.
        for _ in range(4):
            in_ns(netns, lambda: leak.close_wait(1))
        _abort_on_data(netns, 3)
        closes_once(netns, "pso_look")
        time.sleep(2.5)
        assert first.sample is not None
        second = sampled(None, first.sample, ns, feed, thresholds=_T)[0]
        scraped_second = _codes(prom.exposition(collector).decode())
    finally:
        feed.close()
        for p in piles:
            p.close()
        subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", "inet",
                        "pso_look"], capture_output=True)
    found_first = {f.code for f in first.findings}
    found_second = {f.code for f in second.findings}
    staged = {r.code for r in RULES} - set(NOT_STAGED)
    # The scene sets off every stageable rule (else the comparison below proves little)...
    assert second.sample is not None
    assert staged - found_second == set(), (found_first, found_second)
    assert {r.code for r in RULES if not r.interval} - set(NOT_STAGED) <= found_first
    # ... and whatever diagnose() finds, a scrape finds: without an interval on the first
    # scrape, with the time rules from the second on (not those a scrape cannot run).
    assert found_first == scraped_first
    assert found_second - NOT_SCRAPED == scraped_second
    assert set() == NOT_SCRAPED


# --- (b) one look enters the namespace and reads each file once


def _trace(netns: str, code: str, tmp: pathlib.Path, calls: str = "setns,openat") -> str:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (.ci/install.sh installs it)")
    out = tmp / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(out),
                    sys.executable, "-c", code], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    return out.read_text()


def _opens(trace: str, path: str) -> int:
    return len(re.findall(rf'openat\([^,]+, "{re.escape(path)}"', trace))


#: Native trips of one look into another namespace: one (its files and every dump).
_TRIPS = 1


def _setns(trace: str) -> int:
    return len(re.findall(r"\bsetns\(\d+, CLONE_NEWNET\)\s*=\s*0\b", trace))


@pytest.mark.root
@pytest.mark.parametrize("interval", [None, 0.2])
def test_diagnose_enters_the_namespace_once_per_look_and_reads_each_file_once(
        netns: str, tmp_path: pathlib.Path, interval: float | None) -> None:
    code = ("from pysockopt.host import namespaces, diagnose\n"
            f"ns = [n for n in namespaces() if n.name == {netns!r}][0]\n"
            f"diagnose(netns=ns, interval={interval!r})\n")
    trace = _trace(netns, code, tmp_path)
    looks = 1 if interval is None else 2
    # One native trip per look: the files and every dump, one setns. With an interval, a
    # closed-connection log rides on the two looks: its subscriber is made on the first
    # look's way in (one entry of its own, the namespace not opened again) and it takes no
    # look of its own.
    subscriber = 0 if interval is None else 1
    assert _setns(trace) == _TRIPS * looks + subscriber, trace[-2000:]
    for path in look.LOOK_FILES:
        assert _opens(trace, path) == looks, path
    assert _opens(trace, f"/run/netns/{netns}") == looks


@pytest.mark.root
@pytest.mark.parametrize("call", ["diagnose(netns={ns!r})",
                                  "sample(netns={ns!r}, detail=False)",
                                  "sample(netns={ns!r})",
                                  "connections(netns={ns!r}, with_info=True)"])
def test_a_look_by_name_opens_and_enters_the_namespace_once(
        netns: str, tmp_path: pathlib.Path, call: str) -> None:
    # A name is described from the descriptor the look opened (no second open for the
    # census), and a sample without detail counts in the same trip (no state_counts trip).
    code = ("from pysockopt.host import connections, diagnose, sample\n"
            + call.format(ns=netns) + "\n")
    trace = _trace(netns, code, tmp_path)
    assert _setns(trace) == 1, trace[-2000:]
    assert _opens(trace, f"/run/netns/{netns}") == 1, trace[-2000:]


@pytest.mark.root
def test_a_scrape_enters_each_namespace_once(netns: str, tmp_path: pathlib.Path) -> None:
    marker = f"/pso-look-scrapes-start-{uuid.uuid4().hex}"
    code = ("import os\n"
            "import pysockopt.prometheus as prom\n"
            f"collector = prom.SocketCollector(netns={netns!r})\n"  # checks it exists: once
            f"os.path.exists({marker!r})\n"  # where the scrapes start, in the trace
            "for _ in range(2):\n"
            "    prom.exposition(collector)\n")
    trace = _trace(netns, code, tmp_path, "setns,openat,newfstatat,stat")
    assert marker in trace
    scrapes = trace[trace.index(marker):]
    # The collector's closed-connection log subscribes on the first scrape's way in.
    assert _setns(scrapes) == 2 * _TRIPS + 1, scrapes[-2000:]
    assert _opens(scrapes, f"/run/netns/{netns}") == 2, scrapes[-2000:]
    for path in look.LOOK_FILES:
        assert _opens(scrapes, path) == 2, path


@pytest.mark.root
def test_a_look_asks_for_the_states_ss_asks_for_not_bound_inactive(netns: str) -> None:
    # A socket bound but neither listening nor connected: inet_diag reports it (in state
    # CLOSE, 6.18 here) only when the request has the BOUND_INACTIVE bit (Linux 6.5+), and
    # that bit makes every dump walk the host's whole bind hash table (7 ms instead of 0.05
    # here, with 120k bound sockets in other namespaces). connections() and ss -a never set
    # it; neither does a look, whatever it decodes (its counts were the every-socket look's
    # plus the bound sockets as CLOSE).
    def bound() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        return s

    held = in_ns(netns, bound)
    try:
        for sockets in ("every", "rules", "counts"):
            lk = look.look(netns, look.Needs(sockets))
            assert lk.counts is not None, lk.errors
            assert not {TcpState.CLOSE, TcpState.BOUND_INACTIVE} & {
                s for s, n in lk.counts.items() if n}, (sockets, dict(lk.counts))
    finally:
        held.close()


@pytest.mark.root
def test_a_scrape_with_the_closed_connection_log_enters_as_often_as_one_without(
        netns: str, tmp_path: pathlib.Path) -> None:
    # Three scrapes of a collector (whose closed-connection log the scans drive) against
    # three of a look without a log: the log's subscriber is made once, on the first
    # scrape's way in; after that a scrape enters the namespace as often as before.
    code = ("import os\n"
            "from pysockopt import prometheus as prom\n"
            "from pysockopt.host import look\n"
            "from pysockopt.host.owners import OwnerCache\n"
            f"c = prom.SocketCollector(netns={netns!r})\n"
            "opts = look.ScanOptions('rules')\n"
            "def mark(what):  # a stat the trace shows between two scrapes\n"
            "    os.path.exists('/pso-mark-' + what)\n"
            "for i in range(3):\n"
            "    mark('plain'); look.scan(opts, " + repr(netns) + ", None, OwnerCache())\n"
            "for i in range(3):\n"
            "    mark('scrape'); prom.exposition(c)\n"
            "c.close()\n")
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (.ci/install.sh installs it)")
    out = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=setns,newfstatat,stat", "-o", str(out),
                    sys.executable, "-c", code], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    trace = out.read_text()
    per: list[int] = []
    for part in re.split(r"pso-mark-\w+", trace)[1:]:
        per.append(len(re.findall(r"\bsetns\(\d+, CLONE_NEWNET\)\s*=\s*0\b", part)))
    plain, scrapes = per[:3], per[3:]
    assert plain == [_TRIPS] * 3, per
    assert scrapes == [_TRIPS + 1, _TRIPS, _TRIPS], per


# --- (c) one walk of /proc/*/fd for every namespace of a look


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = owners._walk

    def counting(wanted: Any, deadline: Any, *rest: Any) -> owners.Walk:
        calls.append(1)
        return real(wanted, deadline, *rest)

    monkeypatch.setattr(owners, "_walk", counting)
    return calls


@pytest.fixture
def netns2() -> Iterator[str]:
    name = f"pso-look-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _close_wait_in(*names: str) -> list[Pile]:
    """A CLOSE_WAIT pile of 10 (the default threshold) in each namespace, held by us."""
    piles = []
    for name in names:
        pile = in_ns(name, Pile)
        piles.append(pile)
        in_ns(name, lambda: pile.close_wait(10))  # noqa: B023 - run before the next pile
    return piles


@pytest.mark.root
def test_all_netns_diagnose_walks_proc_once(netns: str, netns2: str, walks: list[int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    piles = _close_wait_in(netns, netns2)
    try:
        main(["diagnose", "--all-netns", "--json"])
    finally:
        for p in piles:
            p.close()
    out = capsys.readouterr().out
    assert out.count("CLOSE_WAIT_PILE") >= 2  # both namespaces' piles were named...
    assert len(walks) == 1  # ... from one walk


@pytest.mark.root
def test_all_netns_scrape_walks_proc_at_most_once(netns: str, netns2: str,
                                                  walks: list[int]) -> None:
    piles = _close_wait_in(netns, netns2)
    try:
        collector = prom.SocketCollector(all_netns=True)
        text = prom.exposition(collector).decode()
        first = len(walks)
        # Other namespaces of this host may get new CLOSE_WAIT sockets meanwhile: at most one.
        prom.exposition(collector)
        second = len(walks) - first
        # In our namespace alone nothing is new: the owners are kept, no walk.
        mine = prom.SocketCollector(netns=netns)
        prom.exposition(mine)
        before = len(walks)
        prom.exposition(mine)
        again = len(walks) - before
    finally:
        for p in piles:
            p.close()
    owned: collections.Counter[str] = collections.Counter()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if (s.name == "pysockopt_tcp_close_wait_owner_sockets"
                    and s.labels["owner"] != "unknown"):
                owned[s.labels["netns"]] += int(s.value)
    assert owned[netns] == 10 and owned[netns2] == 10
    assert first == 1 and second <= 1 and again == 0


def test_an_owner_walk_past_its_deadline_says_owners_unknown(walks: list[int]) -> None:
    with Pile() as pile:
        servers = pile.close_wait(2)
        inodes = [os.fstat(s.fileno()).st_ino for s in servers]
        cache = owners.OwnerCache(deadline=1e-9)  # every process past the deadline
        cache.new_look()
        got = cache.resolve(inodes)
        assert set(got.values()) == {owners.INCOMPLETE} and cache.incomplete == 2
        cache = owners.OwnerCache()
        cache.new_look()
        got = cache.resolve(inodes)
        assert all(isinstance(v, tuple) and v and v[0].pid == os.getpid()
                   for v in got.values())
        cache.new_look()
        cache.resolve(inodes)  # kept from the last look: no walk
    assert len(walks) == 2



def test_an_owner_walk_stopped_at_its_deadline_goes_on_at_the_next_look(
        walks: list[int]) -> None:
    # Issue 22: on a host whose walk of /proc/*/fd takes longer than the deadline (1M
    # descriptors: ~6 s here against 5), every scrape started the walk again from the first
    # process and stopped at the deadline: the owners were never named and every scrape paid
    # the whole deadline. A stopped walk goes on where it stopped: each look reads at least
    # one more process, and the owners are named within one look per process.
    with Pile() as pile:
        servers = pile.close_wait(2)
        inodes = [os.fstat(s.fileno()).st_ino for s in servers]
        cache = owners.OwnerCache(deadline=1e-9)  # one process per look
        looks = 0
        got: dict[int, Any] = {}
        limit = 2 * len(os.listdir("/proc")) + 100  # processes come and go meanwhile
        while looks < limit:
            cache.new_look()
            looks += 1
            got = cache.resolve(inodes)
            if owners.INCOMPLETE not in got.values():
                break
        assert all(isinstance(v, tuple) and v and v[0].pid == os.getpid()
                   for v in got.values()), (looks, got)
        assert looks > 1 and cache.incomplete == 0
        cache.new_look()
        cache.resolve(inodes)  # named: no walk
    assert len(walks) == cache.walks == 1  # one walk, gone on with across the looks


def test_a_walk_for_new_owners_reads_small_processes_first_and_stops_when_done() -> None:
    # Issue 22: one new CLOSE_WAIT socket (a scraper that gave up leaves one in the exporter
    # itself) made the walk read every descriptor on the host, a million of them in big
    # holder processes. A walk asked for given sockets reads the processes with the fewest
    # descriptors first and stops once each socket has a holder.
    if os.stat("/proc/self/fd").st_size == 0:
        pytest.skip("/proc/PID/fd does not count descriptors before Linux 6.2")
    big = subprocess.Popen([sys.executable, "-c",
                            "import os, sys\nfd = os.open('/dev/null', os.O_RDONLY)\n"
                            "held = [os.dup(fd) for _ in range(5000)]\n"
                            "print(1, flush=True)\nsys.stdin.read()"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert big.stdout is not None and big.stdout.readline()
        assert os.stat(f"/proc/{big.pid}/fd").st_size > os.stat("/proc/self/fd").st_size
        with Pile() as pile:
            servers = pile.close_wait(2)
            inodes = [os.fstat(s.fileno()).st_ino for s in servers]
            walk = owners.walk_fds(None, until=inodes)
            assert all(walk.holders[i] == [os.getpid()] for i in inodes)
            assert not walk.complete and str(big.pid) in walk.rest  # the big one never read
            # A process named first is read first, whatever it holds: the owner of the
            # last look's sockets (a leaking server's next CLOSE_WAIT).
            again = owners.walk_fds(None, until=inodes, first=[big.pid])
            assert all(again.holders[i] == [os.getpid()] for i in inodes)
            assert str(big.pid) not in again.rest and not again.complete
        assert owners.walk_fds(None).complete  # without until: every process
    finally:
        big.kill()
        big.wait()


@pytest.mark.root
def test_cli_interval_in_a_namespace_takes_the_looks_diagnose_takes(
        netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `diagnose --interval --netns X` and `diagnose(interval=, netns=X)` take the same two
    # looks: what the rules pick (not every socket decoded) and tcp_info only in the second.
    asked: list[tuple[str, bool]] = []
    real = look.look

    def recording(*args: Any, **kw: Any) -> look.Look:
        n = args[1] if len(args) > 1 else kw["needs"]
        asked.append((n.sockets, n.with_info))
        return real(*args, **kw)

    monkeypatch.setattr(look, "look", recording)
    monkeypatch.setattr("pysockopt.host.diagnosis.look", recording)
    diagnose(netns=netns, interval=0.2)
    from_api, asked[:] = list(asked), []
    status, _ = run_cli("diagnose", "--netns", netns, "--interval", "0.2")
    assert status in (0, 1)
    assert asked == from_api and len(asked) == 2, (asked, from_api)
