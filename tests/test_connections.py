from __future__ import annotations

import ctypes
import errno
import importlib
import io
import ipaddress
import json
import mmap
import os
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from helpers import nlmsg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netns import NetnsPair
from sockpiles import Pile, flood_target, ss_counts, ss_lines, syn_flood
from waiting import wait_for

import pysockopt
from pysockopt import (
    Connection,
    InvalidConfigError,
    TcpInfo,
    TcpState,
    Timer,
    connections,
    state_counts,
)
from pysockopt._core import ffi, lib
from pysockopt.cli import main
from pysockopt.host.connections import _parse_dump, parse_proc, parse_state

# The module (the package re-exports its function under the same name, which an import
# statement would find); mypy resolves the import statement to the module itself.
if TYPE_CHECKING:
    import pysockopt.host.connections as conns_module
else:
    conns_module = importlib.import_module("pysockopt.host.connections")

SOURCES = ["netlink", "proc"]


@pytest.fixture(scope="module")
def world() -> Iterator[Pile]:
    """One port with sockets in LISTEN, ESTABLISHED, CLOSE_WAIT, FIN_WAIT2 and TIME_WAIT.

    For the module: its TIME_WAIT and orphaned FIN_WAIT2 last 60 s, which the module's tests
    may outlast on a slow CPU (an emulated one does); a test that needs them late makes its own.
    """
    with Pile(backlog=32) as pile:
        pile.established(3)
        pile.close_wait(2)
        pile.time_wait(3)
        pile.unaccepted(2)  # two connections waiting in the accept queue
        wait_for(lambda: [c.rqueue for c in connections(states=[TcpState.LISTEN],
                                                        port=pile.port)] == [2],
                 5, "two connections in the accept queue")
        yield pile


def _rows(conns: list[Connection]) -> Counter[tuple[TcpState, int, int, int, int | None]]:
    return Counter((c.state, c.local_port, c.remote_port, c.rqueue, c.wqueue) for c in conns)


# --- differential against ss


@pytest.mark.parametrize("source", SOURCES)
def test_connections_match_ss(world: Pile, source: str) -> None:
    ours = connections(port=world.port, source=source)  # type: ignore[arg-type]
    theirs = Counter(ss_lines(world.port))
    if source == "proc":
        # /proc/net/tcp has no listener backlog: compare everything else.
        assert [c.wqueue for c in ours if c.state == TcpState.LISTEN] == [None]
        ours = [c._replace(wqueue=32) if c.state == TcpState.LISTEN else c for c in ours]
    assert _rows(ours) == theirs
    assert sum(theirs.values()) == 1 + 3 * 2 + 2 * 2 + 3 + 2 * 2


@pytest.mark.parametrize("source", SOURCES)
def test_state_counts_match_ss(world: Pile, source: str) -> None:
    counts = state_counts(port=world.port, source=source)  # type: ignore[arg-type]
    assert counts == dict(ss_counts(world.port))
    assert counts[TcpState.CLOSE_WAIT] == 2 and counts[TcpState.FIN_WAIT2] == 2
    assert counts[TcpState.TIME_WAIT] == 3 and counts[TcpState.LISTEN] == 1
    assert all(isinstance(s, TcpState) for s in counts)


def test_netlink_and_proc_give_the_same_sockets(world: Pile) -> None:
    a = set(map(_comparable, connections(port=world.port, source="netlink")))
    b = set(map(_comparable, connections(port=world.port, source="proc")))
    assert a - b == b - a == set()
    assert len(a) == sum(ss_counts(world.port).values())


def test_listener_queue_backlog_and_drops(world: Pile) -> None:
    (listener,) = connections(states=[TcpState.LISTEN], port=world.port)
    assert listener.accept_queue == 2 and listener.backlog == 32
    assert listener.rqueue == 2 and listener.wqueue == 32
    assert listener.drops == 0
    assert listener.remote == "0.0.0.0:*" and listener.local == f"127.0.0.1:{world.port}"


def test_states_filter_runs_in_the_kernel(world: Pile) -> None:
    cw = connections(states=["close-wait"], port=world.port)
    assert [c.state for c in cw] == [TcpState.CLOSE_WAIT] * 2
    both = connections(states={TcpState.TIME_WAIT, "FIN-WAIT-2"}, port=world.port)
    assert Counter(c.state for c in both) == {TcpState.TIME_WAIT: 3, TcpState.FIN_WAIT2: 2}
    assert connections(states=TcpState.SYN_SENT, port=world.port) == []


def test_port_filter_is_local_or_remote(world: Pile) -> None:
    conns = connections(port=world.port)
    assert conns and all(world.port in (c.local_port, c.remote_port) for c in conns)
    assert {c.local_port == world.port for c in conns} == {True, False}


def test_sockets_fields_agree_with_the_sockets_themselves(world: Pile) -> None:
    client, server = world.held[1], world.held[2]
    by_inode = {c.inode: c for c in connections(port=world.port)}
    c = by_inode[os.fstat(client.fileno()).st_ino]
    assert (c.local_address, c.local_port) == client.getsockname()
    assert (c.remote_address, c.remote_port) == client.getpeername()
    assert c.uid == os.geteuid() and c.family == socket.AF_INET
    s = by_inode[os.fstat(server.fileno()).st_ino]
    assert s.local_port == world.port and s.remote_port == c.local_port
    assert c.processes() == (pysockopt.Process(os.getpid(), _comm()),)


def _comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


def test_time_wait_entries_have_timer_and_no_owner(world: Pile) -> None:
    tws = connections(states=[TcpState.TIME_WAIT], port=world.port)
    assert len(tws) == 3
    for c in tws:
        assert c.timer == Timer.TIME_WAIT and 0 < c.expires_ms <= 60_000
        assert c.uid == 0 and c.inode == 0 and c.info is None and c.processes() == ()


def test_with_info_gives_tcp_info_for_established_none_for_time_wait(world: Pile) -> None:
    conns = connections(port=world.port, with_info=True)
    est = [c for c in conns if c.state == TcpState.ESTABLISHED]
    assert len(est) == 3 * 2 + 2 * 2  # accepted or not, the handshake is done
    for c in est:
        assert isinstance(c.info, TcpInfo)
        assert c.info.state == TcpState.ESTABLISHED and c.info.rtt is not None
    assert all(c.info is None for c in conns if c.state == TcpState.TIME_WAIT)
    assert all(c.info is None for c in connections(port=world.port))


def test_ipv6_and_family_filter() -> None:
    with Pile(family=socket.AF_INET6, host="::1") as v6:
        v6.established(1)
        v4 = Pile(port=v6.port)  # the same port number on IPv4
        with v4:
            v4.established(2)
            both = connections(port=v6.port)
            only6 = connections(port=v6.port, family=socket.AF_INET6)
            only4 = connections(port=v6.port, family=socket.AF_INET)
            assert len(both) == 3 + 5 and len(only6) == 3 and len(only4) == 5
            assert {c.local_address for c in only6} == {"::1"}
            assert {c.local for c in only6 if c.state == TcpState.LISTEN} == {f"[::1]:{v6.port}"}
            assert state_counts(port=v6.port, family=socket.AF_INET6) == {
                TcpState.LISTEN: 1, TcpState.ESTABLISHED: 2}
            for source in SOURCES:
                got = connections(port=v6.port, family=socket.AF_INET6,
                                  source=source)  # type: ignore[arg-type]
                assert _rows([c._replace(wqueue=0) for c in got]) == _rows(
                    [c._replace(wqueue=0) for c in only6])


def _comparable(c: Connection) -> Connection:
    # The timer's expiry moves between the two reads; /proc lacks backlog, drops and cookie.
    wq = None if c.state == TcpState.LISTEN else c.wqueue
    return c._replace(expires_ms=0, drops=None, wqueue=wq, cookie=0)


@pytest.mark.parametrize("host", ["::1", "::ffff:127.0.0.1"])
def test_ipv6_records_are_the_same_from_netlink_and_proc(host: str) -> None:
    # "::ffff:127.0.0.1": an AF_INET6 socket talking IPv4, shown as v4-mapped by both.
    with Pile(family=socket.AF_INET6, host=host, backlog=16) as pile:
        pile.established(2)
        pile.close_wait(2)
        pile.time_wait(2)
        pile.unaccepted(1)
        wait_for(lambda: [c.rqueue for c in connections(states=[TcpState.LISTEN],
                                                        port=pile.port)] == [1],
                 5, "one connection in the accept queue")
        nl = connections(port=pile.port, source="netlink")
        proc = connections(port=pile.port, source="proc")
        assert len(nl) == 1 + 2 * 2 + 2 * 2 + 2 + 2
        assert {c.family for c in nl} == {socket.AF_INET6}
        assert {c.local_address for c in nl} == {host}
        assert sorted(map(_comparable, nl)) == sorted(map(_comparable, proc))
        assert [c.backlog for c in nl if c.state == TcpState.LISTEN] == [16]


@pytest.mark.parametrize("bad", [-1, 65536, "80", 1.5, True])
def test_bad_port_is_config_error(bad: object) -> None:
    with pytest.raises(InvalidConfigError, match="port"):
        connections(port=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="port"):
        state_counts(port=bad)  # type: ignore[arg-type]


def test_bad_family_state_and_source_are_config_errors() -> None:
    with pytest.raises(InvalidConfigError, match="family"):
        connections(family=socket.AF_UNIX)
    with pytest.raises(InvalidConfigError, match="state"):
        connections(states=["ESTABLISHED", "HALF_OPEN"])
    with pytest.raises(InvalidConfigError, match="state"):
        connections(states=[99])
    with pytest.raises(InvalidConfigError, match="source"):
        state_counts(source="ss")  # type: ignore[arg-type]


@pytest.mark.parametrize("text,state", [
    ("ESTAB", TcpState.ESTABLISHED), ("close-wait", TcpState.CLOSE_WAIT),
    ("FIN-WAIT-1", TcpState.FIN_WAIT1), ("fin_wait2", TcpState.FIN_WAIT2),
    ("SYN-RECV", TcpState.SYN_RECV), (6, TcpState.TIME_WAIT), (TcpState.LISTEN, TcpState.LISTEN),
])
def test_parse_state_spellings(text: str | int, state: TcpState) -> None:
    assert parse_state(text) is state


def test_connection_as_dict_is_json(world: Pile) -> None:
    conns = connections(port=world.port, with_info=True)
    data = json.loads(json.dumps([c.as_dict() for c in conns]))
    assert {d["state"] for d in data} >= {"LISTEN", "ESTABLISHED", "CLOSE_WAIT", "TIME_WAIT"}
    est = next(d for d in data if d["state"] == "ESTABLISHED")
    assert est["info"]["rtt"] is not None and est["timer"] == "off"


# --- namespaces and large dumps


def test_enumeration_sees_the_calling_threads_namespace(netns_pair: NetnsPair) -> None:
    def inside() -> tuple[dict[TcpState, int], dict[TcpState, int], Pile]:
        pile = Pile(host=netns_pair.addr_a)
        pile.established(2)
        pile.time_wait(1000)  # ~90 KB of replies: several datagrams
        return (state_counts(source="netlink"), state_counts(source="proc"), pile)

    nl, proc, pile = netns_pair.in_ns("a", inside)
    with pile:
        expected = {TcpState.LISTEN: 1, TcpState.ESTABLISHED: 4, TcpState.TIME_WAIT: 1000}
        assert nl == expected and proc == expected
        assert ss_counts(pile.port, netns_pair.a) == expected
        # Not in our namespace (the port number may be in use here by something else).
        assert [c for c in connections(port=pile.port)
                if netns_pair.addr_a in (c.local_address, c.remote_address)] == []


def test_new_syn_recv_means_syn_recv_from_both_sources(netns_pair: NetnsPair) -> None:
    # The SYN+ACKs go unanswered: namespace b holds request sockets until they time out.
    listener, sources = flood_target(netns_pair, 6001, 64)
    try:
        syn_flood(netns_pair, sources[:1], 6001, 5)  # all 5 there, counted by ss

        def look(states: list[TcpState], source: str) -> list[Connection]:
            return netns_pair.in_ns("b", lambda: connections(
                states=states, port=6001, source=source))  # type: ignore[arg-type]

        wait_for(lambda: len(look([TcpState.SYN_RECV], "netlink")) == 5, 30, "5 SYN_RECV")
        answers = {(tuple(states), source): look(states, source)
                   for states in ([TcpState.SYN_RECV], [TcpState.NEW_SYN_RECV])
                   for source in SOURCES}
        for conns in answers.values():
            assert len(conns) == 5 and {c.state for c in conns} == {TcpState.SYN_RECV}
            assert {(c.uid, c.inode, c.timer) for c in conns} == {(0, 0, Timer.RETRANSMIT)}
        rows = {k: sorted(c._replace(expires_ms=0, retrans=0, cookie=0) for c in v)
                for k, v in answers.items()}
        assert len({tuple(v) for v in rows.values()}) == 1
    finally:
        listener.close()


def test_a_dump_larger_than_one_datagram_is_read_to_the_end(netns_pair: NetnsPair) -> None:
    def inside() -> tuple[list[bytes], list[Connection]]:
        with Pile(host=netns_pair.addr_a) as pile:
            pile.established(300)  # 600 sockets with tcp_info: ~250 KB
            datagrams = _raw_dump(socket.AF_INET, states=1 << TcpState.ESTABLISHED,
                                  ext=lib.PSO_SD_EXT_INFO)
            return datagrams, connections(states=[TcpState.ESTABLISHED], with_info=True)

    datagrams, conns = netns_pair.in_ns("a", inside)
    assert len(datagrams) > 4
    parsed = _parse_dump(datagrams)
    assert len(parsed) == len(conns) == 600
    assert sorted(c._replace(expires_ms=0, info=None) for c in parsed) == sorted(
        c._replace(expires_ms=0, info=None) for c in conns)
    assert all(c.info is not None and c.info.size == len(c.info.raw) for c in parsed)


# --- the parser, fed bytes


def _raw_dump(family: int, *, states: int = 0xFFE, ext: int = 0,
              port: int = -1) -> list[bytes]:
    """Do a sock_diag dump from Python, returning the reply datagrams as the kernel sent them."""
    query = ffi.new("struct pso_sd_query *", (family, states, port, ext))
    buf = ffi.new("uint8_t[256]")
    n = lib.pso_sd_build_request(query, family, 7, buf, 256)
    assert n > 0
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
    try:
        s.sendto(ffi.buffer(buf, n)[:], (0, 0))
        out = []
        for _ in range(100_000):
            data = s.recv(65536)
            out.append(data)
            (_length, kind) = struct.unpack_from("=IH", data, len(data) - _last_len(data))
            if kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                return out
        raise AssertionError("dump did not end")
    finally:
        s.close()


def _last_len(data: bytes) -> int:
    """Length of the last netlink message in a datagram."""
    off = 0
    while True:
        (length,) = struct.unpack_from("=I", data, off)
        step = (length + 3) & ~3
        if off + step >= len(data):
            return len(data) - off
        off += step


@pytest.fixture(scope="module")
def sample(world: Pile) -> list[bytes]:
    return _raw_dump(socket.AF_INET, ext=lib.PSO_SD_EXT_INFO | lib.PSO_SD_EXT_SKMEMINFO,
                     port=world.port)


_libc = ctypes.CDLL(None, use_errno=True)
_PAGE = mmap.PAGESIZE


class Guarded:
    """Bytes placed so that they end exactly where an unreadable page begins: a parser that
    reads one byte too far crashes the test instead of passing by luck."""

    def __init__(self, size: int) -> None:
        pages = (size + _PAGE - 1) // _PAGE + 1
        self.map = mmap.mmap(-1, pages * _PAGE)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        guard = self.base + (pages - 1) * _PAGE
        if _libc.mprotect(ctypes.c_void_p(guard), _PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")
        self.end = guard

    def place(self, data: bytes) -> object:
        start = self.end - len(data)
        ctypes.memmove(start, data, len(data))
        return ffi.cast("uint8_t *", start)


_guard = Guarded(1 << 20)


def _parse_guarded(datagrams: list[bytes]) -> tuple[int, list[Connection] | None]:
    """Parse datagrams placed against a guard page; the sink's counts are checked against
    its records whatever the outcome, and returned records against ``_assert_sane``."""
    sink = ffi.new("struct pso_sd_sink *")
    lib.pso_sd_sink_init(sink, 1)
    try:
        rc = lib.PSO_SD_MORE
        for d in datagrams:
            rc = lib.pso_sd_parse(_guard.place(d), len(d), sink)
            if rc < 0:
                break
        # Counted and kept agree, even for a reply refused half-way.
        counts = [int(sink.counts[i]) for i in range(lib.PSO_SD_NSTATES)]
        assert sum(counts) == sink.total == sink.nconns
        states = Counter(int(sink.conns[i].state) for i in range(sink.nconns))
        assert states == Counter({i: n for i, n in enumerate(counts) if n})
        # An error is a real errno value (the kernel's are 1..4095), never a corrupt int.
        assert rc in (lib.PSO_SD_MORE, lib.PSO_SD_DONE) or 0 < -rc < 4096
        if rc < 0:
            return rc, None
        from pysockopt.host.connections import _records

        try:
            conns = _records(sink)
        except OSError as err:  # a state number no TcpState has: refused, not returned
            assert err.errno == errno.EBADMSG
            return -err.errno, None
        _assert_sane(conns, sum(len(d) for d in datagrams))
        return rc, conns
    finally:
        lib.pso_sd_sink_free(sink)


def _assert_sane(conns: list[Connection], size: int) -> None:
    """Every record is one a kernel could have sent: known enums, ports, addresses."""
    for c in conns:
        assert c.family in (socket.AF_INET, socket.AF_INET6)
        assert isinstance(c.state, TcpState) and 1 <= c.state <= 13
        assert isinstance(c.timer, Timer) and 0 <= c.retrans <= 255
        assert 0 <= c.local_port <= 65535 and 0 <= c.remote_port <= 65535
        version = 4 if c.family == socket.AF_INET else 6
        assert ipaddress.ip_address(c.local_address).version == version
        assert ipaddress.ip_address(c.remote_address).version == version
        assert 0 <= c.rqueue < 2**32 and c.wqueue is not None and 0 <= c.wqueue < 2**32
        assert c.drops is None or 0 <= c.drops < 2**31
        assert c.info is None or 0 < c.info.size <= size


def test_parser_reads_a_real_reply(sample: list[bytes], world: Pile) -> None:
    rc, conns = _parse_guarded(sample)
    assert rc == lib.PSO_SD_DONE and conns is not None
    assert _rows(conns) == _rows(connections(port=world.port, family=socket.AF_INET))
    (listener,) = [c for c in conns if c.state == TcpState.LISTEN]
    assert listener.drops == 0  # SKMEMINFO parsed


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_truncated_reply_is_an_error_never_a_short_answer(sample: list[bytes],
                                                          data: st.DataObject) -> None:
    joined = b"".join(sample)
    cut = data.draw(st.integers(0, len(joined) - 1))
    with pytest.raises(OSError) as info:
        _parse_dump([joined[:cut]] if cut else [])
    assert info.value.errno == errno.EBADMSG
    # Datagram by datagram too: losing the last one (NLMSG_DONE) is never a success.
    rc, _ = _parse_guarded(sample[:-1])
    assert rc == lib.PSO_SD_MORE


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_reply_never_crashes_or_returns_malformed_records(
        sample: list[bytes], data: st.DataObject) -> None:
    blob = bytearray(b"".join(sample))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    rc, conns = _parse_guarded([bytes(blob)])  # checks rc, counts and records
    if rc >= 0:
        assert conns is not None
        # Corrupting bytes never adds sockets: at most one record per message in the blob.
        assert len(conns) <= sum(len(d) // 88 for d in sample)


@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_parser(junk: bytes) -> None:
    rc, conns = _parse_guarded([junk])  # checks counts and records (_assert_sane)
    if rc >= 0:
        assert conns is not None and len(conns) <= len(junk) // 88
    else:
        assert conns is None


def _diag_msg(family: int = 2, state: int = 1, timer: int = 0, attrs: bytes = b"") -> bytes:
    return struct.pack("=BBBB", family, state, timer, 0) + bytes(48) + bytes(20) + attrs


DONE = nlmsg(3, struct.pack("=i", 0))


@pytest.mark.parametrize("datagram,code", [
    (b"", errno.EBADMSG),                                               # empty datagram
    (struct.pack("=IHHII", 15, 20, 2, 7, 0), errno.EBADMSG),             # nlmsg_len < header
    (struct.pack("=IHHII", 9999, 20, 2, 7, 0) + bytes(72), errno.EBADMSG),  # len past the end
    (nlmsg(20, bytes(40)), errno.EBADMSG),                           # short inet_diag_msg
    (nlmsg(20, _diag_msg(family=99)), errno.EBADMSG),                # unknown family
    (nlmsg(20, _diag_msg(state=16)), errno.EBADMSG),                 # state out of range
    (nlmsg(20, _diag_msg(state=0)), errno.EBADMSG),                  # no such state
    (nlmsg(20, _diag_msg(timer=9)), errno.EBADMSG),                  # unknown timer
    (nlmsg(20, _diag_msg(attrs=struct.pack("=HH", 40, 2))), errno.EBADMSG),  # attr too long
    (nlmsg(20, _diag_msg(attrs=struct.pack("=HH", 2, 2))), errno.EBADMSG),   # attr too short
    (nlmsg(99, bytes(8)), errno.EBADMSG),                            # unknown message type
    (nlmsg(2, struct.pack("=i", -errno.EACCES) + bytes(16)), errno.EACCES),  # NLMSG_ERROR
    (nlmsg(2, struct.pack("=i", 0) + bytes(16)), errno.EBADMSG),     # an ACK is no dump
    (nlmsg(2, b"\x01"), errno.EBADMSG),                              # truncated NLMSG_ERROR
    (nlmsg(3, struct.pack("=i", -errno.ENOBUFS)), errno.ENOBUFS),     # dump failed mid-way
    (nlmsg(20, _diag_msg(), seq=8) + DONE, errno.EBADMSG),           # someone else's reply
    (nlmsg(2, struct.pack("=i", -100_000) + bytes(16)), errno.EBADMSG),  # no such errno
    (nlmsg(3, struct.pack("=i", -(2**31))), errno.EBADMSG),           # no such errno
])
def test_malformed_replies_are_clear_errors(datagram: bytes, code: int) -> None:
    sink = ffi.new("struct pso_sd_sink *")
    lib.pso_sd_sink_init(sink, 1)
    lib.pso_sd_sink_rearm(sink, 7)
    try:
        rc = lib.pso_sd_parse(_guard.place(datagram), len(datagram), sink)
        assert rc == -code
    finally:
        lib.pso_sd_sink_free(sink)


def test_a_well_formed_synthetic_reply_parses() -> None:
    info = bytes(range(104))
    attrs = struct.pack("=HH", 4 + len(info), 2) + info
    conns = _parse_dump([nlmsg(20, _diag_msg(state=8, attrs=attrs)), DONE])
    assert len(conns) == 1 and conns[0].state == TcpState.CLOSE_WAIT
    assert conns[0].info is not None and conns[0].info.raw == info
    with pytest.raises(OSError, match="before NLMSG_DONE"):
        _parse_dump([nlmsg(20, _diag_msg())])


# --- the /proc parser


@pytest.fixture(scope="module")
def proc_text(world: Pile) -> bytes:
    with open("/proc/thread-self/net/tcp", "rb") as f:
        return f.read()


def test_proc_text_parses_like_the_live_path(proc_text: bytes, world: Pile) -> None:
    got = parse_proc(proc_text, socket.AF_INET, port=world.port)
    assert Counter(c.state for c in got) == Counter(
        c.state for c in connections(port=world.port, family=socket.AF_INET, source="proc"))


@pytest.mark.slow
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_truncated_or_corrupted_proc_text_is_an_error(proc_text: bytes,
                                                      data: st.DataObject) -> None:
    lines = proc_text.splitlines(keepends=True)
    # Cut inside a data line (not at a line end): the file was truncated.
    line = data.draw(st.integers(1, len(lines) - 1))
    cut = data.draw(st.integers(1, len(lines[line]) - 1))
    text = b"".join(lines[:line]) + lines[line][:cut]
    with pytest.raises(OSError) as info:
        parse_proc(text, socket.AF_INET)
    assert info.value.errno == errno.EBADMSG
    # A field replaced by garbage is an error naming the line, never a silent skip.
    fields = lines[line].split()
    which = data.draw(st.integers(1, 9))  # address .. inode
    fields[which] = data.draw(st.sampled_from([b"ZZ", b"-", b"0x", b"1:2:3", b"G" * 9]))
    bad = b"".join(lines[:line]) + b" ".join(fields) + b"\n" + b"".join(lines[line + 1:])
    with pytest.raises(OSError, match=f"line {line + 1}"):
        parse_proc(bad, socket.AF_INET)


_PROC_HEADER = (b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
                b"retrnsmt   uid  timeout inode\n")


def _proc_line(state: int = 1, timer: int = 0, when: int = 0, uid: int = 1000, inode: int = 77,
               tail: bytes = b" 1 0000000000000000 20 4 0 10 -1") -> bytes:
    """One /proc/net/tcp line: 127.0.0.1:8080 -> 127.0.0.1:50000 (tail: after the inode)."""
    return (b"   0: 0100007F:1F90 0100007F:C350 %02X 00000000:00000000 %02X:%08X 00000002 "
            b"%5d        0 %d" % (state, timer, when, uid, inode)) + tail + b"\n"


def test_proc_timer_expiry_is_clamped_not_wrapped() -> None:
    # ceil(2**64 / 1000) ticks: times 1000 it wraps to 384, i.e. "fires in 3 ms".
    ticks = 0x4189374BC6A7F0
    (c,) = parse_proc(_PROC_HEADER + _proc_line(timer=1, when=ticks), socket.AF_INET)
    assert c.timer == Timer.RETRANSMIT and c.expires_ms == 2**32 - 1
    (c,) = parse_proc(_PROC_HEADER + _proc_line(timer=1, when=2**64 - 1), socket.AF_INET)
    assert c.expires_ms == 2**32 - 1
    hz = os.sysconf("SC_CLK_TCK")
    (c,) = parse_proc(_PROC_HEADER + _proc_line(timer=2, when=3 * hz), socket.AF_INET)
    assert c.timer == Timer.KEEPALIVE and c.expires_ms == 3000


def test_proc_uid_zero_only_for_request_sockets() -> None:
    # A request socket ends after "refcnt pointer" and prints its listener's uid, which
    # sock_diag reports as 0; a full SYN_RECV child not yet accepted (TCP Fast Open) also has
    # inode 0, but sock_diag gives its real uid, and so must we.
    request = _proc_line(state=3, timer=1, when=100, inode=0, tail=b" 0 0000000000000000")
    child = _proc_line(state=3, timer=1, when=100, inode=0)
    (r,) = parse_proc(_PROC_HEADER + request, socket.AF_INET)
    (f,) = parse_proc(_PROC_HEADER + child, socket.AF_INET)
    assert r.state == f.state == TcpState.SYN_RECV
    assert r.uid == 0 and f.uid == 1000
    (e,) = parse_proc(_PROC_HEADER + _proc_line(inode=0), socket.AF_INET)
    assert e.uid == 1000  # an ESTABLISHED orphan keeps its uid


@given(st.binary(max_size=400) | st.text("0123456789ABCDEF: \n-", max_size=400).map(str.encode))
def test_random_proc_text_never_crashes(junk: bytes) -> None:
    query = ffi.new("struct pso_sd_query *", (0, 0xFFF, -1, 0))
    for family in (socket.AF_INET, socket.AF_INET6):
        sink = ffi.new("struct pso_sd_sink *")
        lib.pso_sd_sink_init(sink, 1)
        try:
            text = ffi.cast("char *", _guard.place(junk))
            rc = lib.pso_proc_parse(text, len(junk), family, query, sink)
            assert rc == lib.PSO_SD_DONE or rc == -errno.EBADMSG
        finally:
            lib.pso_sd_sink_free(sink)


# --- CLI


def test_cli_states_json_and_table(world: Pile) -> None:
    out = io.StringIO()
    assert main(["states", "--port", str(world.port), "--json"], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["counts"] == {s.label: n for s, n in ss_counts(world.port).items()}
    out = io.StringIO()
    assert main(["states", "--port", str(world.port)], out=out) == 0
    assert "CLOSE_WAIT" in out.getvalue() and "total" in out.getvalue()


def test_cli_conns_filters_and_info() -> None:
    # its own pile: the module's TIME_WAIT may be gone by now on a slow CPU
    with Pile(backlog=32) as world:
        world.established(3)
        world.close_wait(2)
        world.time_wait(3)
        _check_cli_conns(world)


def _check_cli_conns(world: Pile) -> None:
    out = io.StringIO()
    assert main(["conns", "--state", "close-wait", "--port", str(world.port), "--json"],
                out=out) == 0
    rows = json.loads(out.getvalue())
    assert [r["state"] for r in rows] == ["CLOSE_WAIT"] * 2
    out = io.StringIO()
    assert main(["conns", "--port", str(world.port), "-i"], out=out) == 0
    text = out.getvalue()
    assert "rtt_ms" in text and "TIME_WAIT" in text and f":{world.port}" in text
    assert len(text.splitlines()) == 1 + sum(ss_counts(world.port).values())


def test_cli_bad_state_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conns", "--state", "HALF_OPEN"]) == 2
    assert "state" in capsys.readouterr().err


def test_public_names_are_exported() -> None:
    for name in ("Connection", "Timer", "Process", "connections", "state_counts",
                 "processes_of"):
        assert name in pysockopt.__all__ and hasattr(pysockopt, name)


# --- the /proc fallback, through the project's own seam (the dump function), not the kernel


@pytest.mark.parametrize("refusal", [errno.EPROTONOSUPPORT, errno.EPERM, errno.EACCES])
def test_a_refused_netlink_dump_falls_back_to_proc(
    monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    held += [listener.accept()[0] for _ in range(3)]
    try:
        calls = []

        def refused(*args: object, **kwargs: object) -> None:
            calls.append(args)
            raise OSError(refusal, "sock_diag refused (seam)")

        monkeypatch.setattr(conns_module, "_dump", refused)

        def key(c: pysockopt.Connection) -> tuple[TcpState, str, str]:
            return (c.state, c.local, c.remote)

        def agreeing() -> dict[TcpState, int] | None:
            # The filter is "local or remote port P": another process's socket may share the
            # number and come or go between two reads on a busy host, so read again until the
            # three readings agree (ours do not change).
            from_proc = conns_module.connections(port=port, source="proc")
            auto = conns_module.connections(port=port)
            counts = conns_module.state_counts(port=port)
            same = (sorted(map(key, auto)) == sorted(map(key, from_proc))
                    and Counter(c.state for c in auto) == Counter(counts))
            return counts if same else None

        counts = wait_for(agreeing, 30, "the fallback's listing, /proc's and the counts agree")
        assert calls, "the seam was not on the path"
        assert counts.get(TcpState.ESTABLISHED, 0) >= 6 and counts.get(TcpState.LISTEN, 0) >= 1
        with pytest.raises(OSError) as forced:
            conns_module.connections(port=port, source="netlink")
        assert forced.value.errno == refusal
    finally:
        for s in [*held, listener]:
            s.close()


def test_an_error_that_is_not_a_refusal_is_not_hidden_by_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EBADMSG, "malformed reply (seam)")

    monkeypatch.setattr(conns_module, "_dump", broken)
    with pytest.raises(OSError) as info:
        conns_module.connections()
    assert info.value.errno == errno.EBADMSG


# --- the listing's decoding (host/records.py): shared, zero-copy, GC paused


def test_listing_info_equals_tcp_info_and_outlives_the_dump(world: Pile) -> None:
    import gc

    conns = connections(port=world.port, with_info=True, states=[TcpState.ESTABLISHED])
    mine = {(s.getsockname()[1], s.getpeername()[1]): s for s in world.held
            if s.type == socket.SOCK_STREAM and _connected(s)}
    gc.collect()  # the native dump is long freed: the views read the blob they keep alive
    checked = 0
    for c in conns:
        sock = mine.get((c.local_port, c.remote_port))
        if sock is None or c.info is None:
            continue
        direct = pysockopt.tcp_info(sock)
        assert type(c.info.raw) is bytes and c.info.size == direct.size
        for name in ("state", "snd_mss", "rcv_mss", "advmss", "pmtu", "snd_wscale",
                     "rcv_wscale", "options"):
            assert getattr(c.info, name) == getattr(direct, name), name
        assert TcpInfo.from_bytes(c.info.raw) == c.info
        checked += 1
    assert checked >= 3


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def test_listing_shares_one_string_per_address_and_keeps_gc_as_it_was(world: Pile) -> None:
    import gc

    conns = connections(port=world.port, with_info=True)
    locals_ = [c.local_address for c in conns if c.local_address == "127.0.0.1"]
    assert len(locals_) >= 2 and all(a is locals_[0] for a in locals_)
    assert gc.isenabled()
    gc.disable()
    try:
        connections(port=world.port, with_info=True)
        assert not gc.isenabled()  # paused around the loop, then left as the caller had it
    finally:
        gc.enable()


def test_native_dump_decodes_twice_the_same(world: Pile) -> None:
    from pysockopt.host.connections import native_dump

    with native_dump(with_info=True) as dump:
        first = dump.connections()
        second = dump.connections()
    assert first == second
    assert any(c.info is not None for c in first)
    assert [c.info.raw for c in first if c.info] == [c.info.raw for c in second if c.info]


def test_listing_decoded_in_rounds_is_the_listing_decoded_at_once(
    world: Pile, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The decoder copies columns out of the records a round (records.CHUNK) at a time: rounds
    # of a few records, with a last round shorter, give the very listing one round gives.
    from pysockopt.host import records
    from pysockopt.host.connections import native_dump

    with native_dump(with_info=True) as dump:
        whole = dump.connections()
        assert len(whole) > 7
        size = next(k for k in (3, 4, 5, 7) if len(whole) % k)  # a short last round
        monkeypatch.setattr(records, "CHUNK", size)
        rounds = dump.connections()
    assert rounds == whole
    assert [c.info.raw if c.info else None for c in rounds] == \
        [c.info.raw if c.info else None for c in whole]


def test_listing_from_a_dump_with_a_record_without_info_keeps_order(world: Pile) -> None:
    conns = connections(port=world.port, with_info=True)
    kinds = [(c.state, c.info is None) for c in conns]
    assert (TcpState.TIME_WAIT, True) in kinds and (TcpState.ESTABLISHED, False) in kinds
    for c in conns:
        assert (c.info is None) == (c.state in (TcpState.TIME_WAIT, TcpState.SYN_RECV))
        if c.info is not None:
            assert c.info.state == c.state
