"""Real socket situations for the connections and diagnose tests (loopback and namespaces).

Each helper makes the kernel hold sockets in a given state and returns what must be closed.
Ports come from the kernel (bind to 0), so tests never collide with other users of this host.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time
from collections import Counter

from helpers import quiet_listener
from netns import NetnsPair, ip
from waiting import wait_for

from pysockopt import TcpState

#: How ss spells states (ss -tanH), to compare its lines with ours.
SS_STATES = {
    "ESTAB": TcpState.ESTABLISHED, "SYN-SENT": TcpState.SYN_SENT,
    "SYN-RECV": TcpState.SYN_RECV, "FIN-WAIT-1": TcpState.FIN_WAIT1,
    "FIN-WAIT-2": TcpState.FIN_WAIT2, "TIME-WAIT": TcpState.TIME_WAIT,
    "UNCONN": TcpState.CLOSE, "CLOSE-WAIT": TcpState.CLOSE_WAIT,
    "LAST-ACK": TcpState.LAST_ACK, "LISTEN": TcpState.LISTEN, "CLOSING": TcpState.CLOSING,
}


def ss_lines(port: int, netns: str | None = None) -> list[tuple[TcpState, int, int, int, int]]:
    """(state, local port, remote port, Recv-Q, Send-Q) per line of ``ss -tanH`` for ``port``."""
    cmd = ["ss", "-tanH", f"( sport = :{port} or dport = :{port} )"]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        state, rq, wq, local, peer = line.split()[:5]
        rport = peer.rsplit(":", 1)[1]
        rows.append((SS_STATES[state], int(local.rsplit(":", 1)[1]),
                     0 if rport == "*" else int(rport), int(rq), int(wq)))
    return rows


def ss_counts(port: int, netns: str | None = None) -> Counter[TcpState]:
    """Sockets per state as ``ss -tanH`` lists them for ``port``."""
    return Counter(row[0] for row in ss_lines(port, netns))


class Pile:
    """Sockets held open for a test; ``close()`` (or the with-block) releases them all."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1",
                 backlog: int = 128, port: int = 0) -> None:
        self.host = host
        self.family = family
        if port:
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(backlog)
        else:  # a port no stranger's socket carries, so exact counts by port hold
            self.listener = quiet_listener(family, host, backlog)
        self.port: int = self.listener.getsockname()[1]
        self.held: list[socket.socket] = [self.listener]

    def __enter__(self) -> Pile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for s in self.held:
            with contextlib.suppress(OSError):
                s.close()
        self.held.clear()

    def _pair(self, source: str | None = None) -> tuple[socket.socket, socket.socket]:
        client = socket.socket(self.family, socket.SOCK_STREAM)
        client.settimeout(5)
        if source is not None:
            client.bind((source, 0))
        client.connect((self.host, self.port))
        server, _ = self.listener.accept()
        return client, server

    def established(self, n: int) -> list[tuple[socket.socket, socket.socket]]:
        """``n`` connected pairs (client, server), both ESTABLISHED."""
        pairs = [self._pair() for _ in range(n)]
        self.held += [s for pair in pairs for s in pair]
        return pairs

    def close_wait(self, n: int) -> list[socket.socket]:
        """``n`` server sockets in CLOSE_WAIT: the client closed, the server never does.

        The clients stay open with their write side shut, so they sit in FIN_WAIT2.
        """
        servers, clients = [], []
        for _ in range(n):
            client, server = self._pair()
            client.shutdown(socket.SHUT_WR)
            self.held += [client, server]
            servers.append(server)
            clients.append(client)
        wait_for(lambda: all(_state(s) == TcpState.CLOSE_WAIT for s in servers)
                 and all(_state(c) == TcpState.FIN_WAIT2 for c in clients), 5,
                 "CLOSE_WAIT and FIN_WAIT2")
        return servers

    def leaked_clients(self, n: int) -> list[socket.socket]:
        """``n`` client sockets in CLOSE_WAIT: the server closed, the client never does.

        The server sockets are closed (orphans in FIN_WAIT2 on the listening port).
        """
        clients = []
        for _ in range(n):
            client, server = self._pair()
            server.close()
            clients.append(client)
        self.held += clients
        wait_for(lambda: all(_state(c) == TcpState.CLOSE_WAIT for c in clients), 5,
                 "client-side CLOSE_WAIT")
        return clients

    def time_wait(self, n: int, *, source: str | None = None) -> None:
        """``n`` client-side TIME_WAIT sockets (the client closes first; they hold no fd).

        ``source``: the local address the clients bind to (port 0: still ephemeral).
        """
        for _ in range(n):
            client, server = self._pair(source)
            client.close()
            server.recv(1)  # the FIN has arrived
            server.close()

    def unaccepted(self, n: int) -> list[socket.socket]:
        """``n`` non-blocking connects that nobody accepts (fill the accept queue)."""
        clients = []
        for _ in range(n):
            c = socket.socket(self.family, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex((self.host, self.port))
            clients.append(c)
        self.held += clients
        return clients


def _state(sock: socket.socket) -> TcpState:
    # tcpi_state is the first byte of struct tcp_info.
    return TcpState(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])


# --- a SYN flood from addresses nobody answers for


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_packet(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """An IPv4 packet carrying a bare TCP SYN from ``src:sport`` to ``dst:dport``."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    # With IPPROTO_RAW the kernel fills in the total length, the id and the header checksum.
    iphdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP,
                     0, socket.inet_aton(src), socket.inet_aton(dst))
    return iphdr + tcp


def send_syns(sources: list[str], dst: str, dport: int, count: int) -> None:
    """Send ``count`` SYNs to ``dst:dport`` from ``sources`` in turn (bounded, one burst)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for i in range(count):
            src = sources[i % len(sources)]
            raw.sendto(syn_packet(src, dst, 20000 + i, dport, 1000 + i * 7919), (dst, 0))
    finally:
        raw.close()



def syn_flood(pair: NetnsPair, sources: list[str], port: int, count: int,
              timeout: float = 60.0) -> None:
    """``count`` request sockets (SYN_RECV) on ``pair.addr_b:port`` from ``sources``, for sure.

    SYNs are sent from namespace a in one burst; on a busy host the kernel may drop some on the
    way (the per-CPU backlog a veth hands packets to is shared by the whole host). So this waits
    for ``ss`` in namespace b to count them and sends the whole burst again until it does: a
    SYN whose request socket exists is a retransmission (same 4-tuple, no new socket), so the
    count never overshoots. ``timeout`` bounds the whole, well within the request sockets' life
    (about 60 s of SYN+ACK retransmissions).
    """
    deadline = time.monotonic() + timeout

    def syn_recv() -> int:
        return ss_counts(port, pair.b)[TcpState.SYN_RECV]

    while True:
        pair.in_ns("a", lambda: send_syns(sources, pair.addr_b, port, count))
        with contextlib.suppress(AssertionError):
            wait_for(lambda: syn_recv() == count, min(3.0, timeout), f"{count} SYN_RECV")
            return
        seen = syn_recv()
        assert seen <= count, f"{seen} SYN_RECV on port {port}, more than the {count} sent"
        if time.monotonic() > deadline:
            raise AssertionError(f"{seen} of {count} SYN_RECV on port {port} after {timeout} s")


def flood_target(pair: NetnsPair, port: int, backlog: int) -> tuple[socket.socket, list[str]]:
    """A listener on ``pair.addr_b:port`` in namespace b, and 62 spoofable source addresses.

    The sources are routed from b into namespace a, which does not forward: SYN+ACKs to
    them vanish there without a reply, as in a real flood. Close the listener when done.
    """
    subnet = pair.addr_a.rsplit(".", 1)[0]
    ip("-n", pair.b, "route", "add", f"{subnet}.64/26", "via", pair.addr_a)

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind((pair.addr_b, port))
        s.listen(backlog)
        return s

    return pair.in_ns("b", listen), [f"{subnet}.{i}" for i in range(65, 127)]
