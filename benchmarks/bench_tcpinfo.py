"""tcp_info, tcp_info_reader, poll_tcp_info and TcpInfoPoller against the stdlib and a C loop.

design.md's targets: tcp_info(sock) + 3 fields <= 1.3x and tcp_info_reader(3 fields)(sock)
<= 1.0x of getsockopt + a precompiled Struct of the same 3; poll_tcp_info <= 1.3x and a
TcpInfoPoller <= 1.25x of a plain C loop of getsockopt over the same 10k sockets.
"""

from __future__ import annotations

import functools
import resource
import socket
import struct

from pysockopt import TcpInfoPoller, poll_tcp_info, tcp_info, tcp_info_reader
from pysockopt._core import ffi, lib

from ._harness import compare, report

TCP = socket.IPPROTO_TCP
TCP_INFO = socket.TCP_INFO
N_SOCKETS = 10_000

# The fastest stdlib way to the same three fields: one precompiled Struct picking state (byte 0),
# retransmits (byte 2) and rtt (u32 at 68) straight out of the returned bytes.
_THREE = struct.Struct("=BxB65xI")
# What most published snippets do instead: unpack the 104-byte 2.6-era struct in full.
_CLASSIC = struct.Struct("=8B24I")


def _pairs(count: int) -> tuple[list[socket.socket], socket.socket]:
    """``count`` connected loopback pairs (2 * count descriptors) and their listener."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    address = listener.getsockname()
    socks: list[socket.socket] = []
    for _ in range(count):
        client = socket.create_connection(address)
        server, _ = listener.accept()
        socks += (client, server)
    return socks, listener


def run() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * N_SOCKETS + 100
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    single, listener = _pairs(1)
    sock = single[0]
    getsockopt = sock.getsockopt
    unpack_three = _THREE.unpack_from
    unpack_classic = _CLASSIC.unpack_from

    def stdlib_three() -> object:
        state, retransmits, rtt = unpack_three(getsockopt(TCP, TCP_INFO, 280))
        return state, rtt, retransmits

    def stdlib_plain() -> object:
        data = getsockopt(TCP, TCP_INFO, 280)
        state, retransmits, rtt = struct.unpack("=BxB65xI", data[:72])
        return state, rtt, retransmits

    def stdlib_classic() -> object:
        fields = unpack_classic(getsockopt(TCP, TCP_INFO, 280))
        return fields[0], fields[23], fields[2]

    def ours_three() -> object:
        info = tcp_info(sock)
        return info.state, info.rtt, info.retransmits

    reader = tcp_info_reader("state", "rtt", "retransmits")
    # partial: called with the socket as user code would call it, no Python frame added.
    ours_reader = functools.partial(reader, sock)

    socks: list[socket.socket] = []
    try:
        compare(
            'tcp_info_reader("state", "rtt", "retransmits")(sock)',
            stdlib_three,
            ours_reader,
            baseline_label="getsockopt(280) + Struct of the 3",
            target=1.0,
        )
        compare(
            "tcp_info(sock) + state, rtt, retransmits",
            stdlib_three,
            ours_three,
            baseline_label="getsockopt(280) + Struct of the 3",
            target=1.3,
        )
        compare(
            "tcp_info(sock) + state, rtt, retransmits",
            stdlib_plain,
            ours_three,
            baseline_label="getsockopt(280) + struct.unpack(fmt)",
        )
        compare(
            "tcp_info(sock) + state, rtt, retransmits",
            stdlib_classic,
            ours_three,
            baseline_label="getsockopt(280) + unpack 104 bytes",
        )
        socks, big_listener = _pairs(N_SOCKETS // 2)
        single.append(big_listener)
        fds = ffi.new("int[]", [s.fileno() for s in socks])
        buf = ffi.new("unsigned char[]", lib.PSO_TCPI_CAP)
        n = len(socks)

        def c_loop() -> object:
            return lib.pso_bench_getsockopt_loop(fds, n, buf)

        result = compare(
            f"poll_tcp_info over {n} sockets",
            c_loop,
            lambda: poll_tcp_info(socks),
            baseline_label="C loop of getsockopt, same sockets",
            target=1.3,
            rounds=21,
            per_item=n,
        )
        report("C loop per socket", f"{result.baseline_s * 1e9:.0f} ns")
        poller = TcpInfoPoller(socks)
        compare(
            f"TcpInfoPoller(socks).poll() over {n} sockets",
            c_loop,
            poller.poll,
            baseline_label="C loop of getsockopt, same sockets",
            target=1.25,
            rounds=21,
            per_item=n,
        )
    finally:
        for s in single + socks:
            s.close()
        listener.close()
