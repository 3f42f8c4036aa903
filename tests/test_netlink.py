"""The sock_diag dump and its record: layout checked at import, socket cookies, interrupted
dumps, datagrams larger than the receive buffer, replies that never end, length round-ups.

The kernel cannot be made to interrupt a dump, send an oversized datagram or never finish one
on demand, so those paths are driven through the parser with synthetic datagrams, through the
dump's own settings (a small first receive buffer, a short timeout: fields of the per-call
sink), and through the one seam the dump loop has (``_native_dump``, the native call the
Python retry loop makes, wrapped here around the real one).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from helpers import nlmsg, quiet_listener
from netns import NetnsPair

from pysockopt import TcpState, connections, state_counts
from pysockopt._core import ffi, lib
from pysockopt.host import records
from pysockopt.host.connections import Connection, _parse_dump, parse_proc

# The module, not the function pysockopt.host re-exports under the same name (which an import
# statement would find); mypy resolves the import statement to the module itself.
if TYPE_CHECKING:
    import pysockopt.host.connections as conn_module
else:
    conn_module = importlib.import_module("pysockopt.host.connections")

SO_COOKIE = getattr(socket, "SO_COOKIE", 57)  # asm-generic/socket.h
NLM_F_MULTI = 2
NLM_F_DUMP_INTR = 0x10


def _diag_msg(cookie: int = 0, state: int = 1, sport: int = 1234) -> bytes:
    sockid = (struct.pack("!HH", sport, 80) + bytes([127, 0, 0, 1]) + bytes(12)
              + bytes([127, 0, 0, 2]) + bytes(12)
              + struct.pack("=III", 0, cookie & 0xFFFFFFFF, cookie >> 32))
    return struct.pack("=BBBB", socket.AF_INET, state, 0, 0) + sockid + bytes(20)


DONE = nlmsg(3, struct.pack("=i", 0))


def _listener(family: int, host: str) -> socket.socket:
    """A listener on a port the kernel picks, without SO_REUSEADDR (socket.create_server
    sets it): the kernel then never picks a port an earlier test's TIME_WAIT socket holds,
    which would add a stranger to the sockets a test counts."""
    return quiet_listener(family, host, dual_stack=family == socket.AF_INET6)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    listener = _listener(socket.AF_INET, "127.0.0.1")
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield listener, client, server
    for s in (listener, client, server):
        s.close()


def _cookie(sock: socket.socket) -> int:
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), sys.byteorder)


def _key(c: Connection) -> tuple[object, ...]:
    return (c.state, c.local_address, c.local_port, c.remote_address, c.remote_port, c.inode,
            c.cookie)


# --- the record layout


def test_every_record_field_is_checked_against_the_native_layout() -> None:
    fields = list(records.RECORD_FIELDS)
    records.check_record(fields)  # the real layout passes
    i = [name for name, _ in fields].index("sport")
    swapped = [*fields[:i], fields[i + 1], fields[i], *fields[i + 2:]]  # sport <-> dport
    with pytest.raises(ImportError, match="dport"):
        records.check_record(swapped)
    with pytest.raises(ImportError, match="missing"):
        conn_module._check_record(fields[:-1])  # pad dropped


def test_column_copies_refuse_a_field_or_range_past_the_records(
    pair: tuple[socket.socket, ...],
) -> None:
    from pysockopt.host.connections import native_dump

    port = pair[0].getsockname()[1]
    with native_dump(port=port) as dump:
        sink: Any = dump.sink
        n = sink.nconns
        assert n >= 3
        out = ffi.new("uint8_t[]", 8 * (n + 1))
        sport = ffi.offsetof("struct pso_conn", "sport")
        size = ffi.sizeof("struct pso_conn")
        assert lib.pso_sd_column(sink, 0, n, sport, 2, out) == 0
        ports = list(ffi.cast("uint16_t *", out)[0:n])
        assert ports == [c.local_port for c in dump.connections()]
        assert lib.pso_sd_column(sink, 1, n, sport, 2, out) == -errno.EINVAL  # past the end
        assert lib.pso_sd_column(sink, n + 1, 0, sport, 2, out) == -errno.EINVAL
        assert lib.pso_sd_column(sink, 0, n, sport, 3, out) == -errno.EINVAL  # no such width
        assert lib.pso_sd_column(sink, 0, n, size - 4, 8, out) == -errno.EINVAL  # past a record
        assert lib.pso_sd_column(sink, 0, n, size - 8, 8, out) == 0
        assert lib.pso_sd_column(sink, 0, 1, sport, 2, ffi.NULL) == -errno.EINVAL
        assert lib.pso_sd_column(sink, n, 0, sport, 2, ffi.NULL) == 0  # nothing to copy
        idx = ffi.new("uint32_t[]", [1, 2, 3, 4, 5, 6])
        got = ffi.new("uint32_t[]", 3)
        assert lib.pso_sd_idx_column(idx, 3, 0, 3, 1, got) == 0 and list(got) == [2, 4, 6]
        assert lib.pso_sd_idx_column(idx, 3, 1, 2, 0, got) == 0 and list(got)[:2] == [3, 5]
        assert lib.pso_sd_idx_column(idx, 3, 1, 3, 0, got) == -errno.EINVAL
        assert lib.pso_sd_idx_column(idx, 3, 0, 1, 2, got) == -errno.EINVAL


# --- socket cookies


def test_cookie_is_the_sockets_own(pair: tuple[socket.socket, ...]) -> None:
    listener, client, server = pair
    port = listener.getsockname()[1]
    by_end = {(c.local_port, c.remote_port): c for c in connections(port=port)}
    ends = [(port, 0), (client.getsockname()[1], port), (port, client.getsockname()[1])]
    assert by_end[ends[0]].cookie == _cookie(listener)
    assert by_end[ends[1]].cookie == _cookie(client)
    assert by_end[ends[2]].cookie == _cookie(server)
    # these three only: an earlier test's TIME_WAIT may share the port (create_server reuses it)
    assert len({by_end[e].cookie for e in ends}) == 3


def test_cookie_is_the_last_field_and_zero_from_proc(pair: tuple[socket.socket, ...]) -> None:
    listener, _, _ = pair
    # Appended: positional users of the older fields are unaffected.
    assert Connection._fields[-1] == "cookie"
    assert Connection._fields[:15] == (
        "family", "state", "local_address", "local_port", "remote_address", "remote_port",
        "rqueue", "wqueue", "uid", "inode", "timer", "expires_ms", "retrans", "drops", "info")
    port = listener.getsockname()[1]
    assert {c.cookie for c in connections(port=port, source="proc")} == {0}


def test_cookie_is_64_bits_from_the_two_words() -> None:
    (c,) = _parse_dump([nlmsg(20, _diag_msg(cookie=0x0123456789ABCDEF)) + DONE])
    assert c.cookie == 0x0123456789ABCDEF
    assert c.as_dict()["cookie"] == 0x0123456789ABCDEF


def test_parser_takes_the_unspec_dumps_type_18_and_no_other_new_type() -> None:
    (c,) = _parse_dump([nlmsg(18, _diag_msg(cookie=5)) + DONE])  # TCPDIAG_GETSOCK
    assert c.cookie == 5 and c.state == TcpState.ESTABLISHED
    both = _parse_dump([nlmsg(18, _diag_msg(sport=1)) + nlmsg(20, _diag_msg(sport=2)),
                        DONE])
    assert [c.local_port for c in both] == [1, 2]
    for kind in (17, 19, 21):
        with pytest.raises(OSError) as info:
            _parse_dump([nlmsg(kind, _diag_msg()) + DONE])
        assert info.value.errno == errno.EBADMSG


# --- NLM_F_DUMP_INTR


def test_interrupted_reply_is_reported_inconsistent() -> None:
    with pytest.raises(OSError) as info:
        _parse_dump([nlmsg(20, _diag_msg(), NLM_F_MULTI | NLM_F_DUMP_INTR) + DONE])
    assert info.value.errno == errno.EAGAIN and "inconsistent" in str(info.value)
    with pytest.raises(OSError, match="inconsistent"):  # on NLMSG_DONE alone, too
        _parse_dump([nlmsg(20, _diag_msg()), nlmsg(3, bytes(4), NLM_F_DUMP_INTR)])


class Interrupting:
    """Wraps the real native dump; marks its first ``times`` dumps interrupted, as the kernel
    marks a dump during which the tables changed."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls = 0
        self.real = conn_module._native_dump

    def __call__(self, query: Any, sink: Any) -> int:  # cffi cdata: Any in _native.pyi
        self.calls += 1
        rc = int(self.real(query, sink))
        if self.calls <= self.times:
            sink.interrupted = 1
        return rc


def test_interrupted_dump_is_retried_from_a_clean_slate(
    pair: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = pair[0].getsockname()[1]
    expected = sorted(map(_key, connections(port=port)))
    counts = state_counts(port=port)
    fake = Interrupting(times=2)
    monkeypatch.setattr(conn_module, "_native_dump", fake)
    assert sorted(map(_key, connections(port=port))) == expected  # no duplicates kept
    assert fake.calls >= 3
    fake.calls = 0
    assert state_counts(port=port) == counts


def test_dump_interrupted_every_time_is_an_error(
    pair: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Interrupting(times=10**6)
    monkeypatch.setattr(conn_module, "_native_dump", fake)
    with pytest.raises(OSError) as info:
        connections(port=pair[0].getsockname()[1], source="netlink")
    assert info.value.errno == errno.EAGAIN
    assert "interrupted" in str(info.value) and "inconsistent" in str(info.value)
    assert fake.calls == conn_module._DUMP_TRIES


# --- the receive buffer and the receive timeout


def test_datagram_larger_than_the_receive_buffer_is_read_whole(
    pair: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = pair[0].getsockname()[1]
    expected = sorted(map(_key, connections(port=port, with_info=True)))
    # One socket's message (inet_diag_msg + tcp_info) is several hundred bytes: every
    # datagram is larger than a 64-byte first buffer.
    monkeypatch.setattr(conn_module, "_RECV_SIZE", 64)
    got = connections(port=port, with_info=True)
    assert sorted(map(_key, got)) == expected
    assert all(c.info is not None for c in got)


def test_reply_that_never_comes_times_out() -> None:
    sink: Any = conn_module._new_sink(True)  # a cffi struct pointer (object to the library)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
    try:
        sink.timeout_ms = 200
        lib.pso_sd_sink_rearm(sink, 7)
        start = time.monotonic()
        rc = lib.pso_sd_recv_dump(sock.fileno(), sink)  # no request was sent
        took = time.monotonic() - start
        err = conn_module._dump_failure(rc, sink)
    finally:
        sock.close()
        lib.pso_sd_sink_free(sink)
    assert rc == -errno.ETIMEDOUT and 0.15 < took < 10
    assert err.errno == errno.ETIMEDOUT and "no reply" in str(err)


def test_a_dump_read_with_the_timeout_set_still_completes(pair: tuple[socket.socket, ...],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    port = pair[0].getsockname()[1]
    # Short but not shorter than a loaded machine takes to walk the socket table once.
    monkeypatch.setattr(conn_module, "_TIMEOUT_MS", 500)
    assert {c.state for c in connections(port=port)} == {TcpState.LISTEN, TcpState.ESTABLISHED}


# --- the length round-up


#: Each netlink reader over the one walker, called on (buffer, length) with sequence number 5.
WRAP_READERS = {
    "dump": """
sink = ffi.new("struct pso_sd_sink *")
lib.pso_sd_sink_init(sink, 1)
print("rc", lib.pso_sd_parse(ffi.from_buffer(m), size, sink) == lib.PSO_SD_MORE)
""",
    "destroy answer": """
answer = ffi.new("int *")
print("rc", lib.pso_destroy_parse_answer(ffi.from_buffer(m), size, 5, answer) == lib.PSO_NL_MORE)
""",
}


@pytest.mark.parametrize("reader", sorted(WRAP_READERS))
def test_message_length_round_up_does_not_wrap_to_a_zero_step(reader: str) -> None:
    # A NOOP message 0xFFFFFFFD bytes long inside a 4 GiB datagram: rounded up in 32 bits,
    # its length becomes 0 and the parser would stand still on it forever. Only the first page
    # is ever touched; a child process bounds the time a regression would hang.
    code = """
import mmap, struct, sys
from pysockopt._core import ffi, lib
size = 1 << 32
try:
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
except (OSError, OverflowError, ValueError) as err:
    print("skip", err); sys.exit(0)
m[:16] = struct.pack("=IHHII", 0xFFFFFFFD, 1, 2, 5, 0)  # NLMSG_NOOP
""" + WRAP_READERS[reader]
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except subprocess.TimeoutExpired:
        pytest.fail("the parser stood still on a message whose rounded length wrapped to 0")
    if out.startswith("skip"):
        pytest.skip(f"no 4 GiB mapping here: {out}")
    assert out.split() == ["rc", "True"]


# --- the one walker: every reader is a callback over pso_nl_walk


def _walk(data: bytes, seq: int, answer: int = 0
          ) -> tuple[int, list[tuple[int, int, int, bytes]]]:
    """Walks data; the callback records (type, flags, error, payload) and returns answer."""
    seen: list[tuple[int, int, int, bytes]] = []

    def record(m: Any, arg: Any) -> int:
        seen.append((m.type, m.flags, m.error, bytes(ffi.buffer(m.payload, m.len))))
        return answer

    on_msg = ffi.callback("int(*)(const struct pso_nl_msg *, void *)", record)
    buf = ffi.new("uint8_t[]", data) if data else ffi.NULL
    return int(lib.pso_nl_walk(buf, len(data), seq, on_msg, ffi.NULL)), seen


def test_walker_hands_over_each_message_and_skips_noop() -> None:
    data = nlmsg(20, b"abcd") + nlmsg(1, b"") + nlmsg(21, b"xy\0\0")
    rc, seen = _walk(data, 7)
    assert rc == lib.PSO_NL_MORE
    assert seen == [(20, NLM_F_MULTI, 0, b"abcd"), (21, NLM_F_MULTI, 0, b"xy\0\0")]
    # DONE goes to the callback too (its flags may say the dump was interrupted), then ends it.
    rc, seen = _walk(nlmsg(3, struct.pack("=i", 0), flags=NLM_F_MULTI | NLM_F_DUMP_INTR)
                     + nlmsg(20, b""), 7)
    assert rc == lib.PSO_NL_DONE and seen == [(3, NLM_F_MULTI | NLM_F_DUMP_INTR, 0, bytes(4))]
    rc, seen = _walk(nlmsg(3, struct.pack("=i", -errno.ENOMEM)), 7)
    assert rc == -errno.ENOMEM and seen[0][2] == -errno.ENOMEM


@pytest.mark.parametrize(("data", "seq", "answer", "rc"), [
    (b"", 7, 0, -errno.EBADMSG),                                       # empty datagram
    (nlmsg(20, b"")[:15], 7, 0, -errno.EBADMSG),                    # a cut header
    (struct.pack("=IHHII", 15, 20, 2, 7, 0), 7, 0, -errno.EBADMSG),    # nlmsg_len < header
    (struct.pack("=IHHII", 99, 20, 2, 7, 0), 7, 0, -errno.EBADMSG),    # len past the end
    (nlmsg(20, b"", seq=8), 7, 0, -errno.EBADMSG),                  # another request's
    (nlmsg(20, b"", seq=8), 0, 0, 0),                               # seq 0: any
    (nlmsg(2, b"\0\0"), 7, 0, -errno.EBADMSG),                      # error without errno
    (nlmsg(2, struct.pack("=i", -5000)), 7, 0, -errno.EBADMSG),     # out of the range
    (nlmsg(2, struct.pack("=i", 4)), 7, 0, -errno.EBADMSG),         # positive
    (nlmsg(3, struct.pack("=i", -5000)), 7, 0, -errno.EBADMSG),     # DONE status alike
    (nlmsg(4, b""), 7, 0, -errno.ENOBUFS),                          # NLMSG_OVERRUN
    (nlmsg(20, b""), 7, -errno.EPERM, -errno.EPERM),                # the callback's error
    (nlmsg(20, b""), 7, 1, lib.PSO_NL_DONE),                        # the callback's stop
    (nlmsg(20, b""), 7, 2, -errno.EBADMSG),                         # neither
    (nlmsg(20, b""), 7, -5000, -errno.EBADMSG),
])
def test_walker_refuses_what_the_kernel_never_sends(data: bytes, seq: int, answer: int,
                                                    rc: int) -> None:
    assert _walk(data, seq, answer)[0] == rc


def _answer(data: bytes, seq: int = 7) -> tuple[int, int]:
    answer = ffi.new("int *", 12345)
    buf = ffi.new("uint8_t[]", data) if data else ffi.NULL
    return int(lib.pso_destroy_parse_answer(buf, len(data), seq, answer)), answer[0]


def test_destroy_answers_are_read_by_the_walker() -> None:
    ack = struct.pack("=i", 0) + nlmsg(21, bytes(72))  # nlmsgerr: error, then our request
    assert _answer(nlmsg(2, ack)) == (lib.PSO_NL_DONE, 0)
    enoent = struct.pack("=i", -errno.ENOENT) + nlmsg(21, bytes(72))
    assert _answer(nlmsg(2, enoent)) == (lib.PSO_NL_DONE, -errno.ENOENT)
    # Anything before the ack is skipped; a datagram without one asks for the next.
    assert _answer(nlmsg(20, b"") + nlmsg(2, enoent)) == (lib.PSO_NL_DONE, -errno.ENOENT)
    assert _answer(nlmsg(20, b"")) == (lib.PSO_NL_MORE, 12345)
    # Never an answer: a dump's end, another request's ack, a corrupt errno, seq 0.
    assert _answer(DONE)[0] == -errno.EBADMSG
    assert _answer(nlmsg(2, ack, seq=6))[0] == -errno.EBADMSG
    assert _answer(nlmsg(2, struct.pack("=i", -4096)))[0] == -errno.EBADMSG
    assert _answer(nlmsg(2, ack), seq=0)[0] == -errno.EINVAL


# --- per-call failure context


def test_proc_bad_line_is_reported_per_call() -> None:
    header = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    with pytest.raises(OSError) as info:
        parse_proc(header + b"garbage\n", socket.AF_INET)
    assert info.value.errno == errno.EBADMSG and "line 2" in str(info.value)


# --- both families in one dump (TCPDIAG_GETSOCK), and the fallback to one dump per family
#
# The one-dump path must give exactly what the two per-family dumps give, for IPv4, IPv6 and
# v4-mapped sockets, under every filter; a kernel that refuses its request (as one built
# without it does) is reached through the request type the sink carries (``_UNSPEC_TYPE``):
# the running kernel really refuses type 17 (sock_diag_rcv_msg: -EINVAL).

TCPDIAG_GETSOCK = 18
REFUSED_TYPE = 17
_REAL_DUMP = conn_module._native_dump


@contextlib.contextmanager
def _mixed() -> Iterator[tuple[int, int]]:
    """Sockets of every family on two ports: (dual-stack IPv6 port, IPv4 port).

    On the dual-stack listener: IPv6 pairs, and IPv4 clients whose accepted sockets are
    AF_INET6 with v4-mapped addresses; TIME_WAIT and CLOSE_WAIT of both kinds, one connection
    left in the accept queue. On the IPv4 listener: plain IPv4 pairs and a TIME_WAIT.
    """
    held: list[socket.socket] = []
    try:
        dual = _listener(socket.AF_INET6, "::")
        held.append(dual)
        plain = _listener(socket.AF_INET, "127.0.0.1")
        held.append(plain)
        p6, p4 = dual.getsockname()[1], plain.getsockname()[1]

        def pair(listener: socket.socket, host: str, port: int) -> tuple[socket.socket, ...]:
            client = socket.create_connection((host, port), timeout=5)
            server, _ = listener.accept()
            held.extend((client, server))
            return client, server

        for host in ("::1", "127.0.0.1"):
            pair(dual, host, p6)
            pair(dual, host, p6)
            client, server = pair(dual, host, p6)
            client.shutdown(socket.SHUT_WR)  # server: CLOSE_WAIT, client: FIN_WAIT2
            client, server = pair(dual, host, p6)
            client.close()  # client: TIME_WAIT
            server.recv(1)
            server.close()
        pair(plain, "127.0.0.1", p4)
        client, server = pair(plain, "127.0.0.1", p4)
        client.close()
        server.recv(1)
        server.close()
        held.append(socket.create_connection(("127.0.0.1", p6), timeout=5))  # not accepted
        # Until the closing servers are gone (LAST_ACK) and every FIN has arrived.
        want = {p6: {TcpState.LISTEN: 1, TcpState.ESTABLISHED: 10, TcpState.CLOSE_WAIT: 2,
                     TcpState.FIN_WAIT2: 2, TcpState.TIME_WAIT: 2},
                p4: {TcpState.LISTEN: 1, TcpState.ESTABLISHED: 2, TcpState.TIME_WAIT: 1}}
        deadline = time.monotonic() + 5
        while (counts := {p: state_counts(port=p) for p in want}) != want:
            if time.monotonic() > deadline:
                raise AssertionError(f"the sockets did not settle: {counts}")
            time.sleep(0.01)
        yield p6, p4
    finally:
        for s in held:
            s.close()


@pytest.fixture(scope="module")
def mixed() -> Iterator[tuple[int, int]]:
    with _mixed() as ports:
        yield ports


def _stable(c: Connection) -> tuple[object, ...]:
    """A record without what moves between two dumps (timer countdowns, tcp_info's clocks)."""
    return (*c._replace(expires_ms=0, info=None), None if c.info is None else c.info.state)


def _native(family: int, states: int, port: int | None, ext: int, *, split: int = 0,
            unspec_type: int = 0) -> tuple[int, int, int, list[tuple[object, ...]]]:
    """One pso_sd_dump: (rc, dumps sent, the refusal, the records as _stable, sorted)."""
    query = ffi.new("struct pso_sd_query *", (family, states, -1 if port is None else port, ext))
    sink: Any = conn_module._new_sink(True)  # cffi cdata
    sink.split = split
    sink.unspec_type = unspec_type
    try:
        rc = lib.pso_sd_dump(query, sink)
        conns = conn_module._records(sink) if rc == 0 else []
        return rc, sink.dumps, sink.unspec_refused, sorted(map(_stable, conns))
    finally:
        lib.pso_sd_sink_free(sink)


class Recording:
    """Wraps the real native dump and keeps what each call's sink says of the path taken."""

    def __init__(self) -> None:
        self.paths: list[tuple[int, int, int]] = []  # (rc, dumps, unspec_refused)
        self.real = _REAL_DUMP

    def __call__(self, query: Any, sink: Any) -> int:  # cffi cdata: Any in _native.pyi
        rc = int(self.real(query, sink))
        self.paths.append((rc, sink.dumps, sink.unspec_refused))
        return rc


STATE_MASKS = {
    "all": 0xFFF,
    "listen": 1 << TcpState.LISTEN,
    "established": 1 << TcpState.ESTABLISHED,
    "closing-kinds": (1 << TcpState.TIME_WAIT) | (1 << TcpState.CLOSE_WAIT)
                     | (1 << TcpState.FIN_WAIT2),
    "none-there": 1 << TcpState.SYN_SENT,
}


def test_unspec_request_is_tcpdiag_getsock_with_the_same_filter(mixed: tuple[int, int]) -> None:
    port = mixed[0]
    bufs = {}
    for family in (0, socket.AF_INET):
        query = ffi.new("struct pso_sd_query *", (family, 0xFFF, port, lib.PSO_SD_EXT_INFO))
        buf = ffi.new("uint8_t[256]")
        n = lib.pso_sd_build_request(query, family, 7, buf, 256)
        assert n > 0
        bufs[family] = ffi.buffer(buf, n)[:]
    length, kind, flags, seq = struct.unpack_from("=IHHI", bufs[0])
    assert (length, kind, seq) == (len(bufs[0]), TCPDIAG_GETSOCK, 7)
    assert flags == struct.unpack_from("=IHH", bufs[socket.AF_INET])[2]  # REQUEST | DUMP
    # The same port bytecode closes both requests (INET_DIAG_REQ_BYTECODE, 5 ops).
    assert bufs[0][-24:] == bufs[socket.AF_INET][-24:]
    assert struct.unpack_from("=HH", bufs[0], len(bufs[0]) - 24) == (24, 1)
    bad = ffi.new("struct pso_sd_query *", (0, 0xFFF, -1, 0))
    assert lib.pso_sd_build_request(bad, 1, 7, ffi.new("uint8_t[256]"), 256) == -errno.EINVAL


def test_kernel_answers_the_unspec_request_with_both_families_in_type_18(
    mixed: tuple[int, int],
) -> None:
    port = mixed[0]
    query = ffi.new("struct pso_sd_query *", (0, 0xFFF, port, lib.PSO_SD_EXT_INFO))
    buf = ffi.new("uint8_t[256]")
    n = lib.pso_sd_build_request(query, 0, 7, buf, 256)
    datagrams: list[bytes] = []
    kinds: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as s:  # NETLINK_SOCK_DIAG
        s.settimeout(10)
        s.sendto(ffi.buffer(buf, n)[:], (0, 0))
        while not kinds & {2, 3}:  # NLMSG_ERROR, NLMSG_DONE
            data = s.recv(1 << 20)
            datagrams.append(data)
            off = 0
            while off < len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                kinds.add(kind)
                off += (length + 3) & ~3
    assert kinds == {TCPDIAG_GETSOCK, 3}  # every socket message is type 18; then NLMSG_DONE
    parsed = _parse_dump(datagrams)
    assert {(c.family, c.local_address.startswith("::ffff:")) for c in parsed} == {
        (socket.AF_INET6, False), (socket.AF_INET6, True), (socket.AF_INET, False)}
    # (connections() asks for SKMEMINFO on listeners only: their drops are left out here)
    assert sorted(_stable(c._replace(drops=None)) for c in parsed) == sorted(
        _stable(c._replace(drops=None)) for c in connections(port=port, with_info=True))


@pytest.mark.parametrize("ext", [0, lib.PSO_SD_EXT_INFO,
                                 lib.PSO_SD_EXT_INFO | lib.PSO_SD_EXT_SKMEMINFO])
@pytest.mark.parametrize("states", STATE_MASKS.values(), ids=STATE_MASKS.keys())
def test_one_dump_gives_what_the_two_per_family_dumps_give(
    mixed: tuple[int, int], states: int, ext: int,
) -> None:
    for port in mixed:
        rc, dumps, refused, one = _native(0, states, port, ext)
        assert (rc, dumps, refused) == (0, 1, 0)
        rc, dumps, refused, two = _native(0, states, port, ext, split=1)
        assert (rc, dumps, refused) == (0, 2, 0)
        assert one == two
        by_family = sorted(r for fam in (socket.AF_INET, socket.AF_INET6)
                           for r in _native(fam, states, port, ext)[3])
        assert one == by_family
        if states == 0xFFF:
            assert len(one) == (17 if port == mixed[0] else 4)


def test_connections_and_counts_are_the_same_from_either_path(
    mixed: tuple[int, int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, Callable[[int], Any]] = {
        "all": lambda p: connections(port=p),
        "states": lambda p: connections(port=p, states=["LISTEN", "close-wait", "TIME_WAIT"]),
        "with_info": lambda p: connections(port=p, with_info=True),
        "syn_recv": lambda p: connections(port=p, states=[TcpState.NEW_SYN_RECV]),
        "counts": lambda p: sorted(state_counts(port=p).items()),
    }

    def answers(split: int) -> tuple[dict[tuple[str, int], object], list[tuple[int, int, int]]]:
        rec = Recording()
        monkeypatch.setattr(conn_module, "_native_dump", rec)
        monkeypatch.setattr(conn_module, "_SPLIT", split)
        got: dict[tuple[str, int], object] = {}
        for name, call in calls.items():
            for port in mixed:
                result = call(port)
                got[name, port] = result if name == "counts" else sorted(map(_stable, result))
        return got, rec.paths

    one, one_paths = answers(0)
    two, two_paths = answers(1)
    assert one == two
    assert set(one_paths) == {(0, 1, 0)} and set(two_paths) == {(0, 2, 0)}
    infos = [c for c in connections(port=mixed[0], with_info=True) if c.info is not None]
    assert len(infos) == 15  # all but the two TIME_WAIT: IPv4, IPv6 and v4-mapped
    assert {(c.family, c.local_address.startswith("::ffff:")) for c in infos} == {
        (socket.AF_INET, False), (socket.AF_INET6, False), (socket.AF_INET6, True)}


def test_mixed_families_match_ss(mixed: tuple[int, int]) -> None:
    from sockpiles import ss_lines

    for port in mixed:
        ours = Counter((c.state, c.local_port, c.remote_port, c.rqueue, c.wqueue)
                       for c in connections(port=port))
        assert ours == Counter(ss_lines(port))
        assert state_counts(port=port) == dict(Counter(row[0] for row in ss_lines(port)))


def test_refused_one_dump_falls_back_to_the_two_dumps(
    mixed: tuple[int, int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    for port in mixed:
        rc, dumps, refused, fallback = _native(0, 0xFFF, port, lib.PSO_SD_EXT_INFO,
                                               unspec_type=REFUSED_TYPE)
        assert (rc, dumps, refused) == (0, 3, -errno.EINVAL)
        assert fallback == _native(0, 0xFFF, port, lib.PSO_SD_EXT_INFO, split=1)[3]
    expected = {p: sorted(map(_stable, connections(port=p, with_info=True))) for p in mixed}
    counts = {p: state_counts(port=p) for p in mixed}
    rec = Recording()
    monkeypatch.setattr(conn_module, "_native_dump", rec)
    monkeypatch.setattr(conn_module, "_UNSPEC_TYPE", REFUSED_TYPE)
    for port in mixed:
        # Two queries into one sink (listeners first): the refused second one must take
        # back only its own gains, the listeners already read stay, exactly once.
        got = connections(port=port, with_info=True)
        assert sorted(map(_stable, got)) == expected[port]
        assert got[0].state == TcpState.LISTEN
        assert state_counts(port=port) == counts[port]
    assert rec.paths and set(rec.paths) == {(0, 3, -errno.EINVAL)}


def test_a_local_failure_is_never_taken_for_a_refusal() -> None:
    # A query the request builder refuses fails before anything reaches the kernel: reported
    # as it is, with no per-family dumps behind it.
    rc, dumps, refused, _ = _native(0, 0xFFF, 70000, 0)
    assert (rc, dumps, refused) == (-errno.EINVAL, 0, 0)
    query = ffi.new("struct pso_sd_query *", (0, 0xFFF, 70000, 0))
    sink: Any = conn_module._new_sink(False)
    try:
        assert lib.pso_sd_dump(query, sink) == -errno.EINVAL
        assert sink.failed_step == lib.PSO_SD_STEP_SEND
    finally:
        lib.pso_sd_sink_free(sink)


def test_retry_sizing_and_timeout_work_on_the_one_dump_path(
    mixed: tuple[int, int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = mixed[0]
    expected = sorted(map(_stable, connections(port=port, with_info=True)))
    fake = Interrupting(times=2)  # NLM_F_DUMP_INTR twice: retried from a clean slate
    rec = Recording()
    rec.real = fake
    monkeypatch.setattr(conn_module, "_native_dump", rec)
    assert sorted(map(_stable, connections(port=port, with_info=True))) == expected
    assert fake.calls >= 3
    monkeypatch.setattr(conn_module, "_RECV_SIZE", 64)  # every datagram outgrows it
    assert sorted(map(_stable, connections(port=port, with_info=True))) == expected
    monkeypatch.setattr(conn_module, "_RECV_SIZE", 0)
    monkeypatch.setattr(conn_module, "_TIMEOUT_MS", 500)  # short, not shorter than one walk
    assert sorted(map(_stable, connections(port=port, with_info=True))) == expected
    assert set(rec.paths) == {(0, 1, 0)}


@pytest.mark.root
def test_one_dump_of_a_whole_namespace(netns_pair: NetnsPair) -> None:
    # Unfiltered, where nobody else's sockets come and go between the dumps compared.
    def inside() -> dict[str, Any]:
        with _mixed() as (p6, p4):
            out: dict[str, Any] = {"ports": (p6, p4)}
            for name, kw in (("one", {}), ("two", {"split": 1}),
                             ("refused", {"unspec_type": REFUSED_TYPE})):
                out[name] = _native(0, 0xFFF, None, lib.PSO_SD_EXT_INFO, **kw)
            out["ss"] = subprocess.run(["ss", "-tanH"], check=True, capture_output=True,
                                       text=True).stdout
            return out

    got = netns_pair.in_ns("a", inside)
    assert got["one"][:3] == (0, 1, 0)
    assert got["two"][:3] == (0, 2, 0)
    assert got["refused"][:3] == (0, 3, -errno.EINVAL)
    records = got["one"][3]
    assert records == got["two"][3] == got["refused"][3]
    assert len(records) == 21 == len(str(got["ss"]).splitlines())


@pytest.mark.root
def test_one_dump_in_another_namespace(netns_pair: NetnsPair,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # netns=: the dump runs in a native thread that entered the namespace; same path there.
    from sockpiles import ss_lines

    stack = contextlib.ExitStack()
    p6, p4 = netns_pair.in_ns("a", lambda: stack.enter_context(_mixed()))
    with stack:
        paths: list[tuple[int, int]] = []
        real = conn_module._run_in

        def recording(target: Any, reads: Any, dumps: Any) -> OSError | None:  # cffi cdata
            failure = real(target, reads, dumps)  # every query of a listing in one trip
            paths.extend((sink.dumps, sink.unspec_refused) for _, sink in dumps)
            return failure

        monkeypatch.setattr(conn_module, "_run_in", recording)
        answers = {}
        for split, unspec_type in ((0, 0), (1, 0), (0, REFUSED_TYPE)):
            monkeypatch.setattr(conn_module, "_SPLIT", split)
            monkeypatch.setattr(conn_module, "_UNSPEC_TYPE", unspec_type)
            answers[split, unspec_type] = (
                sorted(map(_stable, (c._replace(netns=None) for c in
                                     connections(netns=netns_pair.a, with_info=True)))),
                sorted(state_counts(netns=netns_pair.a).items()))
        assert len(set(map(repr, answers.values()))) == 1
        # connections(): the listener query and the rest; state_counts(): one query.
        assert paths == [(1, 0)] * 3 + [(2, 0)] * 3 + [(3, -errno.EINVAL)] * 3
        conns, counts = answers[0, 0]
        assert len(conns) == 21 and sum(n for _, n in counts) == 21
        for port in (p6, p4):
            ours = Counter((c.state, c.local_port, c.remote_port, c.rqueue, c.wqueue)
                           for c in connections(netns=netns_pair.a, port=port))
            assert ours == Counter(ss_lines(port, netns_pair.a))
