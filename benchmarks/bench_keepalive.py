"""apply_keepalive against the stdlib's setsockopt calls (design.md performance targets)."""

from __future__ import annotations

import socket

from pysockopt import KeepaliveConfig, apply_keepalive

from ._harness import compare

TCP = socket.IPPROTO_TCP


def run() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    config = KeepaliveConfig(idle=60, interval=10, count=5)
    setsockopt = client.setsockopt
    getsockopt = client.getsockopt

    def stdlib_set() -> None:
        setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        setsockopt(TCP, socket.TCP_KEEPIDLE, 60)
        setsockopt(TCP, socket.TCP_KEEPINTVL, 10)
        setsockopt(TCP, socket.TCP_KEEPCNT, 5)

    def stdlib_set_get() -> None:
        stdlib_set()
        getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        getsockopt(TCP, socket.TCP_KEEPIDLE)
        getsockopt(TCP, socket.TCP_KEEPINTVL)
        getsockopt(TCP, socket.TCP_KEEPCNT)
        getsockopt(TCP, socket.TCP_USER_TIMEOUT)

    try:
        compare(
            "apply_keepalive(verify=False), 4 options",
            stdlib_set,
            lambda: apply_keepalive(client, config, verify=False),
            baseline_label="4 x sock.setsockopt",
            target=0.75,
        )
        compare(
            "apply_keepalive(verify=True), set + read back",
            stdlib_set_get,
            lambda: apply_keepalive(client, config),
            baseline_label="4 x setsockopt + 5 x getsockopt",
        )
    finally:
        for s in (client, peer, server):
            s.close()
