from __future__ import annotations

import ast
import errno
import json
import os
import pathlib
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import wait_for

import pysockopt
from pysockopt import TCP_INFO_FIELDS, TcpInfo, TcpInfoField, TcpState, poll_tcp_info, tcp_info
from pysockopt import tcpinfo as mod

TCP = socket.IPPROTO_TCP
KNOWN = mod.TCP_INFO_KNOWN_SIZE
ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_TCP = (errno.ENOPROTOOPT, errno.EOPNOTSUPP)

# Fields that do not move on an idle loopback connection between two reads.
STABLE = ("state", "ca_state", "retransmits", "probes", "backoff", "options", "snd_wscale",
          "rcv_wscale", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
          "pmtu", "advmss", "total_retrans", "bytes_acked", "bytes_received", "segs_out",
          "segs_in", "notsent_bytes", "data_segs_in", "data_segs_out", "delivered",
          "bytes_sent", "bytes_retrans", "rcv_ooopack", "snd_wnd", "total_rto")


def reference(raw: bytes, field: TcpInfoField) -> int | TcpState | None:
    """Decode one field the slow, obvious way, independently of the generated getters."""
    if len(raw) < field.end:
        return None
    value = int.from_bytes(raw[field.offset:field.end], sys.byteorder)
    if field.bits is not None:
        first, width = field.bits
        if sys.byteorder == "big":
            first = 8 * field.size - first - width
        value = (value >> first) & ((1 << width) - 1)
    return TcpState(value) if field.name == "state" else value


def stdlib_raw(sock: socket.socket) -> bytes:
    return sock.getsockopt(TCP, socket.TCP_INFO, 512)


@pytest.fixture
def pair_with_traffic(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> Iterator[tuple[socket.socket, socket.socket, int, int]]:
    """(client, server, bytes client sent, bytes server sent), every byte read and acked."""
    client, server = tcp_pair
    up, down = 123_457, 4_321
    client.sendall(os.urandom(up))
    got = 0
    while got < up:
        got += len(server.recv(1 << 20))
    server.sendall(b"r" * down)
    got = 0
    while got < down:
        got += len(client.recv(1 << 20))
    assert wait_for(lambda: tcp_info(client).unacked == 0 and tcp_info(server).unacked == 0)
    yield client, server, up, down


# --- the field table


def layout(kernel: tuple[int, int] | None) -> tuple[TcpInfoField, ...]:
    return mod.tcp_info_fields(kernel)


@pytest.mark.parametrize("kernel", [(6, 18), (7, 0)])
def test_table_covers_every_byte_once(kernel: tuple[int, int]) -> None:
    fields = layout(kernel)
    bits = [0] * (8 * KNOWN)
    for f in fields:
        first, width = f.bits or (0, 8 * f.size)
        assert f.offset % f.size == 0, f"{f.name} is not naturally aligned"
        for bit in range(8 * f.offset + first, 8 * f.offset + first + width):
            bits[bit] += 1
    assert max(bits) == 1, "two fields claim the same bit"
    covered = {i // 8 for i, n in enumerate(bits) if n}
    assert covered == set(range(KNOWN)), "a byte of the known struct is not in the table"
    names = [f.name for f in fields]
    assert len(names) == len(set(names))
    assert [f.offset for f in fields] == sorted(f.offset for f in fields)


def test_table_layouts_and_versions() -> None:
    assert KNOWN == 280
    assert {f.name for f in layout((6, 18))} ^ {f.name for f in layout((7, 0))} == {
        "ecn_mode", "options2"}
    assert {f.name for f in layout(None)} == set(mod.FIELD_NAMES) - {
        "ecn_mode", "options2", "accecn_opt_seen", "accecn_fail_mode"}
    # Only the reshaped bytes depend on the version; everything else goes by the length.
    assert {f.name for f in layout((6, 18))} - {f.name for f in layout((2, 6))} == {
        "accecn_fail_mode", "accecn_opt_seen"}
    sizes: dict[str, int] = {}
    for f in TCP_INFO_FIELDS:
        sizes[f.kernel] = max(sizes.get(f.kernel, 0), f.end)
    assert sizes["2.6"] == 104 and sizes["3.15"] == 120 and sizes["4.1"] == 136
    assert sizes["4.6"] == 160 and sizes["4.19"] == 224 and sizes["5.4"] == 232
    assert sizes["6.7"] == 248 and sizes["6.18"] == 280
    for f in TCP_INFO_FIELDS:
        assert f.meaning and f.unit and re.fullmatch(r"\d+\.\d+", f.kernel)
        assert f.ctype.startswith("__u")


def test_typed_attributes_mirror_the_table() -> None:
    # TcpInfo declares one annotation per field for type checkers; they must match the table.
    tree = ast.parse((ROOT / "pysockopt" / "tcpinfo.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TcpInfo")
    block = next(n for n in cls.body if isinstance(n, ast.If))
    declared = [n.target.id for n in block.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    assert declared == list(mod.FIELD_NAMES)
    for name in mod.FIELD_NAMES:
        assert hasattr(mod._FULL, name)


@pytest.mark.skipif(not os.path.exists("/usr/include/linux/tcp.h") or not shutil.which("cc"),
                    reason="needs the host's linux/tcp.h and a C compiler")
def test_offsets_match_the_compilers_view_of_the_host_header() -> None:
    # The build host's header is older than the running kernel (232 bytes here): every field it
    # declares must sit exactly where the table says, bitfields included.
    header = pathlib.Path("/usr/include/linux/tcp.h").read_text()
    body = re.search(r"struct tcp_info \{(.*?)\n\};", header, re.S)
    assert body is not None
    declared = re.findall(r"tcpi_(\w+)\s*(:\s*\d+)?", re.sub(r"/\*.*?\*/", "", body[1], flags=re.S))
    table = {f.name: f for f in layout(mod.RUNNING_KERNEL or (6, 18))}
    lines = []
    for name, bitfield in declared:
        if bitfield:
            lines.append(
                f'  {{ struct tcp_info t; memset(&t, 0, sizeof t); t.tcpi_{name} = ~0u;'
                f' unsigned char *p = (unsigned char *)&t; int lo = -1, hi = -1;'
                f' for (int i = 0; i < (int)(8 * sizeof t); i++) if (p[i / 8] >> (i % 8) & 1)'
                f' {{ if (lo < 0) lo = i; hi = i; }}'
                f' printf("{name} bits %d %d\\n", lo, hi - lo + 1); }}')
        else:
            lines.append(f'  printf("{name} %zu %zu\\n", offsetof(struct tcp_info, tcpi_{name}),'
                         f' sizeof(((struct tcp_info *)0)->tcpi_{name}));')
    source = ("#include <linux/tcp.h>\n#include <stddef.h>\n#include <stdio.h>\n"
              "#include <string.h>\nint main(void) {\n" + "\n".join(lines)
              + '\n  printf("sizeof %zu 0\\n", sizeof(struct tcp_info));\n  return 0;\n}\n')
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp, "offsets.c")
        src.write_text(source)
        exe = pathlib.Path(tmp, "offsets")
        subprocess.run(["cc", "-o", str(exe), str(src)], check=True, capture_output=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    checked = 0
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "sizeof":
            assert int(parts[1]) <= KNOWN
            continue
        f = table[parts[0]]
        if parts[1] == "bits":
            bit, width = int(parts[2]), int(parts[3])
            assert (bit // 8 // f.size * f.size, bit - 8 * f.offset, width) == (
                f.offset, f.bits[0] if f.bits else 0, f.bits[1] if f.bits else 8 * f.size), f.name
        else:
            assert (int(parts[1]), int(parts[2])) == (f.offset, f.size), f.name
        checked += 1
    assert checked == len(declared) >= 40


# --- TcpState


def test_state_numbers_and_labels() -> None:
    expected = {"ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT1": 4, "FIN_WAIT2": 5,
                "TIME_WAIT": 6, "CLOSE": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9, "LISTEN": 10,
                "CLOSING": 11, "NEW_SYN_RECV": 12, "BOUND_INACTIVE": 13}
    assert {s.name: s.value for s in TcpState} == expected
    assert TcpState(3).label == "SYN_RECV" and TcpState.CLOSE_WAIT.label == "CLOSE_WAIT"
    assert TcpState.TIME_WAIT.label == "TIME_WAIT" and TcpState.LISTEN.label == "LISTEN"
    assert TcpState.ESTABLISHED.ss_label == "ESTAB"
    assert TcpState.FIN_WAIT2.ss_label == "FIN-WAIT-2"
    assert all(s.ss_label for s in TcpState)
    assert pysockopt.TcpState is TcpState


# --- decoding bytes


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400),
       st.sampled_from([(6, 18), (7, 0), (4, 9), None]))
def test_from_bytes_decodes_exactly_what_was_returned(data: bytes,
                                                      kernel: tuple[int, int] | None) -> None:
    info = TcpInfo.from_bytes(data, kernel=kernel)
    fields = {f.name: f for f in layout(kernel)}
    for name in mod.FIELD_NAMES:
        value = getattr(info, name)
        if name not in fields:
            assert value is None, name
        elif name == "state" and data and data[0] not in TcpState._value2member_map_:
            assert value == data[0] and not isinstance(value, TcpState)
        else:
            assert value == reference(data, fields[name]), name
    assert info.size == len(data) and info.raw == data
    assert info.extra == data[KNOWN:]
    assert info.kernel == kernel
    assert TcpInfo.from_bytes(bytearray(data), kernel=kernel) == info
    assert TcpInfo.from_bytes(memoryview(data), kernel=kernel) == info


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=KNOWN, max_size=KNOWN))
def test_the_whole_struct_view_decodes_as_the_table_says(data: bytes) -> None:
    # The view of a whole struct (what tcp_info() returns on this kernel) is a ctypes struct
    # laid out from the table: every field reads what the table's offsets say, as the
    # bytes-backed views (any other length) do.
    info = TcpInfo.from_bytes(data)
    assert type(info) is mod._FULL
    longer = TcpInfo.from_bytes(data + b"\x00")  # one byte more: a bytes-backed view
    assert type(longer) is not mod._FULL
    fields = {f.name: f for f in layout(mod.RUNNING_KERNEL)}
    for name in mod.FIELD_NAMES:
        value = getattr(info, name)
        assert value == getattr(longer, name), name
        if name not in fields:
            assert value is None, name
        elif name != "state" or data[0] in TcpState._value2member_map_:
            assert value == reference(data, fields[name]), name
    assert info.size == KNOWN and info.raw == data and info.extra == b""
    assert info == TcpInfo.from_bytes(bytearray(data)) == TcpInfo.from_bytes(memoryview(data))


def test_arbitrary_lengths_make_a_bounded_number_of_classes() -> None:
    for n in range(700):
        assert TcpInfo.from_bytes(bytes(n)).size == n
    own = [key for key in mod._CLASSES if key[1] == mod.RUNNING_KERNEL and key[2] == -1]
    assert len(own) <= len(layout(mod.RUNNING_KERNEL)) + 1


class SubSocket(socket.socket):
    pass


def test_every_field_matches_the_stdlib_bytes(
    pair_with_traffic: tuple[socket.socket, socket.socket, int, int],
) -> None:
    client, server, _, _ = pair_with_traffic
    for sock in (client, server):
        raw = stdlib_raw(sock)  # whatever the running kernel returns, never a fixed size
        info = TcpInfo.from_bytes(raw)
        for f in layout(mod.RUNNING_KERNEL):
            if f.end <= len(raw):
                assert getattr(info, f.name) == reference(raw, f), f.name
            else:
                assert getattr(info, f.name) is None, f.name  # not returned: unknown
        ours = tcp_info(sock)
        assert ours.size == len(raw) and ours.extra == raw[KNOWN:]
        for name in STABLE:
            assert getattr(ours, name) == getattr(info, name), name
        by_fd = tcp_info(sock.fileno())
        with SubSocket(fileno=os.dup(sock.fileno())) as sub:  # a subclass: the C-core path
            by_sub = tcp_info(sub)
        for name in STABLE:
            assert getattr(by_fd, name) == getattr(info, name), name
            assert getattr(by_sub, name) == getattr(info, name), name


@pytest.mark.parametrize("size", [104, 160, 232, 248])
def test_truncated_reply_leaves_later_fields_none(tcp_pair: tuple[socket.socket, socket.socket],
                                                 size: int) -> None:
    full = tcp_info(tcp_pair[0])
    if size > full.size:  # 6.1 returns 232 bytes, 6.12 248: nothing to cut there
        pytest.skip(f"this kernel returns {full.size} bytes of tcp_info, not more than {size}")
    short = TcpInfo.from_bytes(full.raw[:size])
    assert short.size == size and short.extra == b""
    for f in layout(mod.RUNNING_KERNEL):
        expected = getattr(full, f.name) if f.end <= size else None
        assert getattr(short, f.name) == expected, f.name
    assert short.state is TcpState.ESTABLISHED and short.rtt == full.rtt
    if size == 104:
        assert short.pacing_rate is None and short.bytes_acked is None
        assert short.delivery_rate_app_limited == full.delivery_rate_app_limited  # byte 7
    assert short.as_dict()["received_ce_bytes"] is None


def test_bytes_beyond_the_known_layout_are_kept(tcp_pair: tuple[socket.socket, socket.socket],
                                              ) -> None:
    full = tcp_info(tcp_pair[0])
    # what this kernel returned (232 bytes on 6.1, 248 on 6.12), zeros up to the known layout,
    # then 8 bytes from a kernel newer than pysockopt
    padded = full.raw + bytes(KNOWN - full.size)
    newer = TcpInfo.from_bytes(padded + b"\x01\x02\x03\x04\x05\x06\x07\x08")
    assert newer.size == KNOWN + 8 and newer.extra == bytes(range(1, 9))
    assert newer.rtt == full.rtt and newer.raw[:KNOWN] == padded
    assert newer.received_ce_bytes == (full.received_ce_bytes or 0)  # None before 6.18: zeros
    assert "extra=8 bytes" in repr(newer) and newer.as_dict()["extra"] == "0102030405060708"


def test_reshaped_bytes_follow_the_kernel_version() -> None:
    raw = bytearray(KNOWN)
    raw[0] = TcpState.ESTABLISHED
    raw[276:280] = (0b10 | 0b01 << 2 | 0b1010 << 4 | 0xABCDEF << 8).to_bytes(4, sys.byteorder)
    old = TcpInfo.from_bytes(raw, kernel=(6, 18))
    new = TcpInfo.from_bytes(raw, kernel=(7, 1))
    unknown = TcpInfo.from_bytes(raw, kernel=None)
    assert (new.ecn_mode, new.accecn_opt_seen, new.accecn_fail_mode, new.options2) == (
        2, 1, 0b1010, 0xABCDEF)
    assert old.ecn_mode is None and old.options2 is None
    assert old.accecn_fail_mode == int.from_bytes(raw[276:278], sys.byteorder)
    assert old.accecn_opt_seen == int.from_bytes(raw[278:280], sys.byteorder)
    assert unknown.accecn_fail_mode is None and unknown.ecn_mode is None
    assert unknown.received_ce_bytes == 0
    assert pickle.loads(pickle.dumps(new)).ecn_mode == 2


def test_running_kernel_is_parsed_from_uname() -> None:
    release = os.uname().release
    assert tuple(int(x) for x in release.split(".")[:2]) == mod.RUNNING_KERNEL
    assert TcpInfo.from_bytes(b"\x01").kernel == mod.RUNNING_KERNEL


def test_tcpinfo_is_read_only_comparable_and_picklable(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    info = tcp_info(tcp_pair[0])
    for name in ("rtt", "state", "size", "ecn_mode", "anything"):
        with pytest.raises(AttributeError):
            setattr(info, name, 1)
    with pytest.raises(TypeError):
        TcpInfo()
    with pytest.raises(TypeError):
        TcpInfo.from_bytes("not bytes")  # type: ignore[arg-type]
    same = TcpInfo.from_bytes(info.raw)
    assert same == info and hash(same) == hash(info) and same != info.raw
    back = pickle.loads(pickle.dumps(info))
    assert back == info and back.rtt == info.rtt and isinstance(back, TcpInfo)
    short = pickle.loads(pickle.dumps(TcpInfo.from_bytes(info.raw[:104])))
    assert short.size == 104 and short.bytes_acked is None


def test_repr_and_as_dict(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    info = tcp_info(tcp_pair[0])
    text = repr(info)
    assert text.startswith(f"TcpInfo(state=ESTABLISHED, size={info.size}, rtt=")
    assert info.size == len(stdlib_raw(tcp_pair[0]))
    assert f"snd_cwnd={info.snd_cwnd}" in text
    data = info.as_dict()
    assert list(data)[:2] == ["size", "state"] and data["state"] == "ESTABLISHED"
    assert set(data) == {"size", "extra", *mod.FIELD_NAMES}
    assert json.loads(json.dumps(data)) == data
    assert repr(TcpInfo.from_bytes(b"")) == "TcpInfo(state=None, size=0)"


# --- real sockets


def test_exact_byte_counters_after_a_known_transfer(
    pair_with_traffic: tuple[socket.socket, socket.socket, int, int],
) -> None:
    client, server, up, down = pair_with_traffic
    c, s = tcp_info(client), tcp_info(server)
    # The connecting side's SYN occupies one sequence number, which bytes_acked counts.
    assert c.bytes_acked == up + 1 and c.bytes_sent == up and c.bytes_received == down
    assert s.bytes_received == up and s.bytes_acked == down and s.bytes_sent == down
    assert c.bytes_retrans == 0 and c.total_retrans == 0 and c.retransmits == 0
    assert c.data_segs_out is not None and c.data_segs_out >= 1
    assert s.data_segs_in == c.data_segs_out
    assert c.notsent_bytes == 0 and c.unacked == 0


def test_listen_socket_reports_accept_queue_and_backlog() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=7)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        assert wait_for(lambda: tcp_info(listener).accept_queue == 3)
        info = tcp_info(listener)
        assert info.state is TcpState.LISTEN and info.accept_backlog == 7
        assert (info.unacked, info.sacked) == (3, 7)
        accepted, _ = listener.accept()
        accepted.close()
        assert tcp_info(listener).accept_queue == 2
        assert tcp_info(clients[0]).accept_queue is None
        assert tcp_info(clients[0]).accept_backlog is None
    finally:
        for c in clients:
            c.close()
        listener.close()


def ss_line(port: int) -> str:
    out = subprocess.run(["ss", "-tanH", "sport", f"= :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return out


def test_close_wait_fin_wait2_and_the_way_to_time_wait(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    assert tcp_info(client).state is TcpState.ESTABLISHED
    client.shutdown(socket.SHUT_WR)  # our FIN: the peer must close its side
    assert wait_for(lambda: tcp_info(server).state is TcpState.CLOSE_WAIT)
    assert wait_for(lambda: tcp_info(client).state is TcpState.FIN_WAIT2)
    assert server.recv(10) == b""  # the FIN, as the application sees it
    port = client.getsockname()[1]
    server.shutdown(socket.SHUT_WR)  # the peer's FIN: the client's side moves to TIME_WAIT
    # The kernel hands the connection to a TIME_WAIT mini-socket and the descriptor's socket is
    # left CLOSE; ss sees the TIME-WAIT entry for the same port.
    assert wait_for(lambda: tcp_info(client).state is TcpState.CLOSE)
    if shutil.which("ss"):
        assert "TIME-WAIT" in ss_line(port)


def test_matches_ss_for_the_same_socket(
    pair_with_traffic: tuple[socket.socket, socket.socket, int, int],
) -> None:
    if not shutil.which("ss"):
        pytest.skip("ss (iproute2) is not installed")
    client, _, _, _ = pair_with_traffic
    port = client.getsockname()[1]
    out = subprocess.run(["ss", "-tinH", "src", f"127.0.0.1:{port}"], capture_output=True,
                         text=True, check=True).stdout
    info = tcp_info(client)
    pairs = dict(re.findall(r"\b([a-z_]+):(\d+(?:,\d+)?)\b", out))
    assert pairs["wscale"] == f"{info.snd_wscale},{info.rcv_wscale}"
    checks = {"mss": info.snd_mss, "rcvmss": info.rcv_mss, "advmss": info.advmss,
              "cwnd": info.snd_cwnd, "pmtu": info.pmtu, "bytes_sent": info.bytes_sent,
              "bytes_acked": info.bytes_acked, "bytes_received": info.bytes_received,
              "segs_out": info.segs_out, "segs_in": info.segs_in,
              "data_segs_out": info.data_segs_out, "data_segs_in": info.data_segs_in,
              "rcv_space": info.rcv_space, "snd_wnd": info.snd_wnd}
    for key, value in checks.items():
        if key in pairs:
            assert int(pairs[key]) == value, key
    assert {"mss", "cwnd", "bytes_acked", "bytes_received"} <= set(pairs)


def test_vanished_peer_shows_retransmits_then_fin_wait1(netns_pair: object) -> None:
    from netns import NetnsPair

    assert isinstance(netns_pair, NetnsPair)
    with netns_pair.connected(5601) as (client, server):
        client.sendall(b"hello")
        assert server.recv(5) == b"hello"
        netns_pair.link_down("a")  # the client's packets stop: no FIN, no RST
        server.sendall(b"into the void")
        assert wait_for(lambda: (tcp_info(server).retransmits or 0) >= 1)
        info = tcp_info(server)
        assert info.unacked is not None and info.backoff is not None
        assert info.rto is not None and info.last_ack_recv is not None
        assert info.state is TcpState.ESTABLISHED and info.unacked >= 1
        # With the link down the retransmission never leaves the host, so total_retrans may
        # stay 0; the timer's own counters move.
        assert info.backoff >= 1 and info.rto > 200_000 and info.last_ack_recv > 0
        server.shutdown(socket.SHUT_WR)
        assert tcp_info(server).state is TcpState.FIN_WAIT1


def test_unacknowledged_fin_is_last_ack(netns_pair: object) -> None:
    from netns import NetnsPair

    assert isinstance(netns_pair, NetnsPair)
    with netns_pair.connected(5602) as (client, server):
        client.shutdown(socket.SHUT_WR)
        assert wait_for(lambda: tcp_info(server).state is TcpState.CLOSE_WAIT)
        netns_pair.link_down("b")  # now the server's FIN is never acknowledged
        server.shutdown(socket.SHUT_WR)
        info = tcp_info(server)
        # The FIN (one sequence number) is outstanding: queued, as the link is down.
        assert info.unacked is not None and info.notsent_bytes is not None
        assert info.state is TcpState.LAST_ACK and info.unacked + info.notsent_bytes == 1


def test_syn_sent_to_a_silent_host(netns_pair: object) -> None:
    from netns import NetnsPair

    assert isinstance(netns_pair, NetnsPair)
    netns_pair.link_down("b")
    client = netns_pair.socket("a")
    try:
        client.setblocking(False)
        assert client.connect_ex((netns_pair.addr_b, 5603)) == errno.EINPROGRESS
        info = tcp_info(client)
        assert info.state is TcpState.SYN_SENT and info.unacked == 1
        assert info.bytes_acked == 0 and info.rtt == 0
    finally:
        client.close()


# --- bad input


def test_bad_sockets_raise_the_usual_oserror() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix_a, unix_b = socket.socketpair()
    read_end, write_end = os.pipe()
    closed = socket.socket()
    closed.close()
    spare = socket.socket()
    closed_fd = spare.detach()
    os.close(closed_fd)
    try:
        for sock in (udp, unix_a, udp.fileno()):
            with pytest.raises(OSError) as info:
                tcp_info(sock)
            assert info.value.errno in NOT_TCP and "not a TCP socket" in str(info.value)
        with pytest.raises(OSError) as info:
            tcp_info(read_end)
        assert info.value.errno == errno.ENOTSOCK
        for bad in (closed, closed_fd, -1):
            with pytest.raises(OSError) as info:
                tcp_info(bad)
            assert info.value.errno == errno.EBADF and "TCP_INFO" in str(info.value)
        for wrong in ("3", 1.5, None, True, b"x", [3]):
            with pytest.raises(TypeError):
                tcp_info(wrong)  # type: ignore[arg-type]
    finally:
        for s in (udp, unix_a, unix_b):
            s.close()
        os.close(read_end)
        os.close(write_end)


class FilenoObject:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_batch_keeps_order_and_puts_each_error_in_its_place(
    pair_with_traffic: tuple[socket.socket, socket.socket, int, int],
) -> None:
    client, server, up, _ = pair_with_traffic
    listener = socket.create_server(("127.0.0.1", 0), backlog=5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix_a, unix_b = socket.socketpair()
    read_end, write_end = os.pipe()
    closed = socket.socket()
    closed.close()
    closed_file = open(os.devnull, "rb")  # noqa: SIM115
    closed_file.close()
    try:
        socks = [client, closed, server.fileno(), read_end, udp, listener, unix_a, 999_999,
                 FilenoObject(client.fileno()), closed_file, server]
        results = poll_tcp_info(socks)  # type: ignore[arg-type]
        assert len(results) == len(socks)
        ok = {0: client, 2: server, 5: listener, 8: client, 10: server}
        for i, result in enumerate(results):
            if i in ok:
                assert isinstance(result, TcpInfo), (i, result)
            else:
                assert isinstance(result, OSError) and not isinstance(result, TcpInfo), i
        assert results[0].bytes_acked == up + 1 and results[8].bytes_acked == up + 1  # type: ignore[union-attr]
        assert results[2].bytes_received == up and results[10].bytes_received == up  # type: ignore[union-attr]
        assert results[5].accept_backlog == 5  # type: ignore[union-attr]
        errnos = {i: r.errno for i, r in enumerate(results) if isinstance(r, OSError)}
        assert errnos[1] == errno.EBADF and errnos[7] == errno.EBADF and errnos[9] == errno.EBADF
        assert errnos[3] == errno.ENOTSOCK
        assert errnos[4] in NOT_TCP and errnos[6] in NOT_TCP
        assert "fd 999999" in str(results[7])
        # Views of one batch share a buffer but each decodes its own bytes.
        returned = len(stdlib_raw(client))  # what this kernel returns, not the newest layout
        assert results[0].raw != results[2].raw and results[0].size == returned  # type: ignore[union-attr]
        with pytest.raises(TypeError, match=r"socks\[2\]"):
            poll_tcp_info([client, server, "nope"])  # type: ignore[list-item]
        assert poll_tcp_info([]) == []
        assert [r.state for r in poll_tcp_info(s for s in (client, server))] == [  # type: ignore[union-attr]
            TcpState.ESTABLISHED, TcpState.ESTABLISHED]
    finally:
        for s in (listener, udp, unix_a, unix_b):
            s.close()
        os.close(read_end)
        os.close(write_end)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["client", "server", "closed", "pipe", "udp", "int"]),
                max_size=40))
def test_batch_equals_one_by_one(kinds: list[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        read_end, write_end = os.pipe()
        closed = socket.socket()
        closed.close()
        by_kind = {"client": client, "server": server, "closed": closed, "pipe": read_end,
                   "udp": udp, "int": client.fileno()}
        try:
            socks = [by_kind[k] for k in kinds]
            batch = poll_tcp_info(socks)  # type: ignore[arg-type]
            for sock, result in zip(socks, batch, strict=True):
                try:
                    single: TcpInfo | OSError = tcp_info(sock)  # type: ignore[arg-type]
                except OSError as err:
                    single = err
                assert type(result) is type(single) or (
                    isinstance(result, TcpInfo) and isinstance(single, TcpInfo))
                if isinstance(single, OSError):
                    assert isinstance(result, OSError) and result.errno == single.errno
                else:
                    assert isinstance(result, TcpInfo)
                    for name in STABLE:
                        assert getattr(result, name) == getattr(single, name)
        finally:
            for s in (client, server, udp):
                s.close()
            os.close(read_end)
            os.close(write_end)


def test_each_thread_reads_its_own_buffer() -> None:
    # The native single-socket buffer is per thread (the GIL is released during the call):
    # many threads reading different sockets at once must each see their own bytes.
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    pairs = []
    for i in range(8):
        c = socket.create_connection(listener.getsockname())
        s, _ = listener.accept()
        c.sendall(b"x" * (1000 + i))
        got = 0
        while got < 1000 + i:
            got += len(s.recv(4096))
        pairs.append((c, s))
    errors: list[str] = []

    def worker(i: int) -> None:
        fd = pairs[i][1].fileno()
        for _ in range(2000):
            info = tcp_info(fd)  # the int path goes through the per-thread native buffer
            if info.bytes_received != 1000 + i:
                errors.append(f"thread {i}: {info.bytes_received}")
                return
            batch = poll_tcp_info([pairs[i][1], fd])
            if any(b.bytes_received != 1000 + i for b in batch):  # type: ignore[union-attr]
                errors.append(f"thread {i}: batch")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c, s in pairs:
        c.close()
        s.close()
    listener.close()
    assert errors == []


def test_large_batch_with_holes() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(listener.getsockname()))
            socks.append(listener.accept()[0])
        for s in socks[::7]:
            s.close()  # every 7th is closed: EBADF in place, the rest decode
        results = poll_tcp_info(socks)
        for i, r in enumerate(results):
            if i % 7 == 0:
                assert isinstance(r, OSError) and r.errno == errno.EBADF
            else:
                assert isinstance(r, TcpInfo) and r.state in (TcpState.ESTABLISHED,
                                                              TcpState.CLOSE_WAIT)
                assert r.snd_mss == tcp_info(socks[i]).snd_mss
    finally:
        for s in socks:
            s.close()
        listener.close()


def test_native_paths_leak_no_descriptors(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3000):
        tcp_info(client.fileno())
        poll_tcp_info([client, server, -1])
    assert len(os.listdir("/proc/self/fd")) == before


# --- docs


def test_docs_reference_lists_every_field() -> None:
    doc = (ROOT / "docs" / "tcpinfo.md").read_text()
    for f in TCP_INFO_FIELDS:
        assert f"`{f.name}`" in doc


# --- tcp_info_reader: a compiled reader of chosen fields


def test_reader_decodes_every_field_as_tcp_info_does(
    pair_with_traffic: tuple[socket.socket, socket.socket, int, int],
) -> None:
    client, server, _, _ = pair_with_traffic
    names = list(mod.FIELD_NAMES)
    reader = pysockopt.tcp_info_reader(*reversed(names))  # any order, bitfields included
    assert reader.fields == tuple(reversed(names))
    for sock in (client, server):
        raw = stdlib_raw(sock)
        expected = TcpInfo.from_bytes(raw)
        decoded = reader.from_bytes(raw)
        assert decoded == tuple(getattr(expected, n) for n in reversed(names))
        read = dict(zip(reader.fields, reader(sock), strict=True))
        assert isinstance(read["state"], TcpState)
        for name in STABLE:
            assert read[name] == getattr(expected, name), name


def test_reader_of_a_few_fields_asks_only_for_their_bytes(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = tcp_pair
    assert pysockopt.tcp_info_reader("state").size == 1
    three = pysockopt.tcp_info_reader("state", "rtt", "retransmits")
    assert three.size == 72  # rtt is the u32 at 68
    state, rtt, retransmits = three(client)
    info = tcp_info(client)
    assert (state, retransmits) == (TcpState.ESTABLISHED, info.retransmits)
    assert isinstance(rtt, int) and rtt > 0
    assert pysockopt.tcp_info_reader("rtt", "rtt")(client)[0] == pysockopt.tcp_info_reader(
        "rtt", "rtt")(client)[1]


@pytest.mark.parametrize("size", [0, 1, 104, 160, 232, 248])
def test_reader_gives_none_beyond_the_returned_length(
    tcp_pair: tuple[socket.socket, socket.socket], size: int,
) -> None:
    names = ("state", "snd_wscale", "rtt", "pacing_rate", "bytes_acked", "min_rtt",
             "delivered", "rcv_wnd", "total_rto", "received_ce")
    reader = pysockopt.tcp_info_reader(*names)
    # Cut to size, or what the running kernel returns when that is shorter (232 on 6.1).
    cut = tcp_info(tcp_pair[0]).raw[:size]
    short = TcpInfo.from_bytes(cut)
    assert reader.from_bytes(cut) == tuple(getattr(short, n) for n in names)
    fields = {f.name: f for f in layout(mod.RUNNING_KERNEL)}
    for name, value in zip(names, reader.from_bytes(cut), strict=True):
        assert (value is None) == (fields[name].end > len(cut)), name


def test_reader_of_every_socket_like_and_every_bad_one() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    reader = pysockopt.tcp_info_reader("state", "unacked")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix_a, unix_b = socket.socketpair()
    read_end, write_end = os.pipe()
    closed = socket.socket()
    closed.close()
    spare = socket.socket()
    closed_fd = spare.detach()
    os.close(closed_fd)
    try:
        with SubSocket(fileno=os.dup(listener.fileno())) as sub:
            for sock in (listener, listener.fileno(), FilenoObject(listener.fileno()), sub):
                assert reader(sock)[0] == TcpState.LISTEN
        for sock in (udp, unix_a, udp.fileno()):
            with pytest.raises(OSError) as info:
                reader(sock)
            assert info.value.errno in NOT_TCP and "not a TCP socket" in str(info.value)
        with pytest.raises(OSError) as info:
            reader(read_end)
        assert info.value.errno == errno.ENOTSOCK
        for bad in (closed, closed_fd, -1):
            with pytest.raises(OSError) as info:
                reader(bad)
            assert info.value.errno == errno.EBADF
        for wrong in ("3", 1.5, None, True, b"x", [3]):
            with pytest.raises(TypeError):
                reader(wrong)  # type: ignore[arg-type]
    finally:
        for s in (listener, udp, unix_a, unix_b):
            s.close()
        os.close(read_end)
        os.close(write_end)


def test_reader_refuses_unknown_or_missing_names() -> None:
    with pytest.raises(pysockopt.InvalidConfigError):
        pysockopt.tcp_info_reader()
    with pytest.raises(pysockopt.InvalidConfigError) as info:
        pysockopt.tcp_info_reader("state", "tcpi_rtt")
    assert "tcpi_rtt" in str(info.value)
    with pytest.raises(TypeError):
        pysockopt.tcp_info_reader(3)  # type: ignore[arg-type]


# --- TcpInfoPoller: a fixed set polled again and again


def test_poller_equals_poll_tcp_info_with_errors_in_place(
    pair_with_traffic: tuple[socket.socket, socket.socket, int, int],
) -> None:
    client, server, _, _ = pair_with_traffic
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    read_end, write_end = os.pipe()
    closed = socket.socket()
    closed.close()
    try:
        batches: list[list[socket.socket | int | FilenoObject]] = [
            [client, server], [client, udp, closed, server],
            [client, read_end, FilenoObject(server.fileno()), server.fileno()]]
        for socks in batches:
            poller = pysockopt.TcpInfoPoller(socks)
            assert len(poller) == len(socks) and list(poller.sockets) == socks
            for _ in range(2):  # the same answer every poll
                ours = poller.poll()
                plain = poll_tcp_info(socks)
                assert len(ours) == len(plain) == len(socks)
                for a, b in zip(ours, plain, strict=True):
                    assert type(a) is type(b)
                    if isinstance(a, OSError):
                        assert isinstance(b, OSError) and a.errno == b.errno
                    else:
                        assert not isinstance(b, OSError)
                        for name in STABLE:
                            assert getattr(a, name) == getattr(b, name), name
        errors = pysockopt.TcpInfoPoller([udp, read_end, closed]).poll()
        assert [e.errno for e in errors if isinstance(e, OSError)][1:] == [errno.ENOTSOCK,
                                                                            errno.EBADF]
    finally:
        udp.close()
        os.close(read_end)
        os.close(write_end)


def test_poller_never_reads_a_socket_that_took_a_closed_ones_number() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    first = socket.create_connection(listener.getsockname())
    second = socket.create_connection(listener.getsockname())
    keep: list[socket.socket] = []
    try:
        poller = pysockopt.TcpInfoPoller([first, second, FilenoObject(listener.fileno())])
        assert all(not isinstance(r, OSError) for r in poller.poll())
        fd = first.fileno()
        first.close()  # between polls; a listener now takes its number
        other = socket.create_server(("127.0.0.1", 0))
        keep.append(other)
        if other.fileno() != fd:
            os.dup2(other.fileno(), fd)
            keep.append(socket.socket(fileno=fd))
        results = poller.poll()
        assert isinstance(results[0], OSError) and results[0].errno == errno.EBADF
        assert "closed" in str(results[0])
        assert not isinstance(results[1], OSError) and results[1].state == TcpState.ESTABLISHED
        assert not isinstance(results[2], OSError) and results[2].state == TcpState.LISTEN
    finally:
        for s in (*keep, listener, second):
            s.close()


def test_poller_refuses_what_is_not_socket_like() -> None:
    with pytest.raises(TypeError) as info:
        pysockopt.TcpInfoPoller([0, "x"])  # type: ignore[list-item]
    assert "socks[1]" in str(info.value)
    assert pysockopt.TcpInfoPoller([]).poll() == []
