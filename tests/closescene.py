"""A scene for the rules on closes: churn, and connections given up with data unacknowledged.

Run in a namespace the test made, with an nft table (``inet pso_closes`` by default) and its
input chain ``in`` there (the scene adds its drop rule to it).
"""

from __future__ import annotations

import socket
import subprocess
import threading

from netns import run_in_netns
from waiting import wait_for

import pysockopt
from pysockopt import TcpState

#: TCP_USER_TIMEOUT (linux/tcp.h), milliseconds.
_USER_TIMEOUT = 18


def closes_once(ns: str, table: str = "pso_closes", given_up: int = 4, churn: int = 10) -> None:
    """One round: ``given_up`` connections given up with data unacked, ``churn`` short ones.

    Data segments to the dead listener's port are dropped (its handshake passes: only
    packets longer than 200 bytes are), so each client's TCP_USER_TIMEOUT gives up with its
    data unacknowledged: the kernel's gave_up verdict, the unacked evidence. The churn: plain
    connections opened and closed at once (between two looks: short-lived).
    """
    def run() -> None:
        dead = socket.create_server(("127.0.0.1", 0))
        quick = socket.create_server(("127.0.0.1", 0))
        subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "rule", "inet", table,
                        "in", "tcp", "dport", str(dead.getsockname()[1]), "ip", "length",
                        "gt", "200", "drop"], check=True, capture_output=True)
        held: list[socket.socket] = []
        try:
            for _ in range(given_up):
                c = socket.create_connection(dead.getsockname())
                c.setsockopt(socket.IPPROTO_TCP, _USER_TIMEOUT, 300)
                s, _ = dead.accept()
                c.send(b"x" * 2000)
                held += [c, s]
            for _ in range(churn):
                c = socket.create_connection(quick.getsockname())
                s, _ = quick.accept()
                c.close()
                s.close()
            clients = held[::2]
            wait_for(lambda: all(pysockopt.tcp_info(c).state == TcpState.CLOSE
                                 for c in clients), 30, "the user timeouts")
        finally:
            for sock in held:
                sock.close()
            dead.close()
            quick.close()

    run_in_netns(ns, run)


def closes_scene(ns: str, stop: threading.Event, errors: list[BaseException],
                 churn: int = 10, given_up: int = 4) -> None:
    """Until ``stop``: rounds of ``closes_once``; what fails goes to ``errors``."""
    try:
        while not stop.is_set():
            closes_once(ns, churn=churn, given_up=given_up)
    except BaseException as err:
        errors.append(err)
