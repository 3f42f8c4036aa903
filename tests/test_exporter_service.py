"""`pysockopt exporter`'s HTTP serving, and the library's ``prometheus.serve()``: bounded scrapes.

One scan in flight is shared by every request that comes meanwhile; a scan answers the
requests within --cache-seconds of its end; a request whose client has gone takes no scan and
leaves no CLOSE_WAIT socket in the exporter. Real sockets on loopback, the real collector; the
only stand-in is a collector that holds its scan open until the test lets it go, so that
"during a scan" is a state the test makes, not a race it hopes for.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from waiting import wait_for

from pysockopt import TcpState, connections

pytest.importorskip("prometheus_client")

from pysockopt import prometheus
from pysockopt._serving import Shared, serve
from pysockopt.prometheus import SocketCollector


class Held:
    """A collector whose scans wait for ``release`` (and count themselves)."""

    def __init__(self) -> None:
        self.inner = SocketCollector()
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Any]:
        self.entered.set()
        assert self.release.wait(60), "the test never released the scan"
        yield from self.inner.collect()


def _get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        body: bytes = r.read()
        return body


def _ask_and_leave(port: int) -> None:
    """Send a whole request and close: corked, so the request and the FIN arrive together.

    Without the cork the server's handler could read the request before the FIN came, and
    rightly take it for a client still there.
    """
    with socket.create_connection(("127.0.0.1", port)) as gone:
        gone.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        gone.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")


def _close_wait(port: int) -> int:
    return len(connections(states=[TcpState.CLOSE_WAIT], port=port))


def test_departed_half_requests_take_no_scan_and_leave_no_close_wait() -> None:
    collector = SocketCollector()
    shared = Shared(collector, 0)
    server = serve("127.0.0.1", 0, shared)
    port = int(server.server_address[1])
    try:
        clients = []
        for _ in range(30):  # the request line and a header, never the blank line
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            clients.append(c)
        wait_for(lambda: len(connections(states=[TcpState.ESTABLISHED], port=port)) >= 30,
                 30, "the exporter to accept the 30 clients")
        for c in clients:
            c.close()
        wait_for(lambda: _close_wait(port) == 0, 30,
                 "the exporter to close the departed clients' connections")
        assert collector.scrapes == 0 and shared.scans == 0
        assert b"pysockopt_tcp_sockets" in _get(port)
        assert collector.scrapes == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_complete_request_whose_client_left_takes_no_scan() -> None:
    held = Held()
    shared = Shared(held, 0)
    server = serve("127.0.0.1", 0, shared)
    port = int(server.server_address[1])
    try:
        # One scan in flight (held): a request that joined it would wait, its socket kept.
        first = threading.Thread(target=_get, args=(port,))
        first.start()
        assert held.entered.wait(30)
        _ask_and_leave(port)
        wait_for(lambda: _close_wait(port) == 0, 30, "the departed client's socket to close")
        held.release.set()
        first.join(60)
        assert shared.scans == 1 and held.inner.scrapes == 1
    finally:
        held.release.set()
        server.shutdown()
        server.server_close()


def test_requests_during_a_scan_share_it() -> None:
    held = Held()
    shared = Shared(held, 0)
    server = serve("127.0.0.1", 0, shared)
    port = int(server.server_address[1])
    bodies: list[bytes] = []
    try:
        threads = [threading.Thread(target=lambda: bodies.append(_get(port)))
                   for _ in range(6)]
        threads[0].start()
        assert held.entered.wait(30)
        for t in threads[1:]:
            t.start()
        wait_for(lambda: shared.waiting == 5, 30, "five requests waiting on the scan in flight")
        held.release.set()
        for t in threads:
            t.join(60)
        assert len(bodies) == 6 and len(set(bodies)) == 1
        assert shared.scans == 1 and held.inner.scrapes == 1
        _get(port)  # window 0: after the scan ended, a request takes a new one
        assert held.inner.scrapes == 2
    finally:
        held.release.set()
        server.shutdown()
        server.server_close()


def test_cache_window_answers_from_the_last_scan() -> None:
    collector = SocketCollector()
    server = serve("127.0.0.1", 0, Shared(collector, 3600))
    port = int(server.server_address[1])
    try:
        assert _get(port) == _get(port) == _get(port)
        assert collector.scrapes == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_scan_is_not_kept() -> None:
    class Failing:
        calls = 0

        def collect(self) -> Iterator[Any]:
            Failing.calls += 1
            raise RuntimeError("no")

    shared = Shared(Failing(), 3600)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            list(shared.collect())
    assert Failing.calls == 2


@pytest.mark.parametrize("value", ["-1", "nan", "3601", "x"])
def test_cache_seconds_is_checked(value: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pysockopt", "exporter", "--cache-seconds",
                        value], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--cache-seconds" in r.stderr


# --- the library's serve(): the same bounds as the command (they used to be the CLI's only)


class HeldCollector(SocketCollector):
    """A real SocketCollector whose scans wait for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Any]:
        self.entered.set()
        assert self.release.wait(60), "the test never released the scan"
        yield from super().collect()


def test_library_serve_shares_one_scan_among_concurrent_requests() -> None:
    # prometheus.serve() was prometheus_client's start_http_server: six requests at once took
    # six scans, one after another.
    held = HeldCollector()
    host, port = prometheus.serve("127.0.0.1", 0, held, cache_seconds=3600)
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(_get(port))) for _ in range(6)]
    try:
        threads[0].start()
        assert held.entered.wait(30)
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(connections(states=[TcpState.ESTABLISHED], port=port)) >= 12, 30,
                 "the six requests to be connected")
    finally:
        held.release.set()
        for t in threads:
            t.join(60)
    assert host == "127.0.0.1"
    assert len(bodies) == 6 and len(set(bodies)) == 1
    assert held.scrapes == 1


def test_library_serve_takes_no_scan_for_a_client_that_left() -> None:
    held = HeldCollector()
    _, port = prometheus.serve("127.0.0.1", 0, held, cache_seconds=0)
    first = threading.Thread(target=_get, args=(port,))
    try:
        first.start()
        assert held.entered.wait(30)  # one in flight: a handler joining it would wait
        _ask_and_leave(port)
        wait_for(lambda: _close_wait(port) == 0, 30, "the departed client's socket to close")
    finally:
        held.release.set()
        first.join(60)
    assert held.scrapes == 1
    _get(port)  # window 0: a real request after it takes its own scan
    assert held.scrapes == 2


@pytest.mark.parametrize("value", [-1, 3601, float("nan"), True, "1"])
def test_library_serve_checks_cache_seconds(value: object) -> None:
    with pytest.raises(ValueError, match="cache_seconds"):
        prometheus.serve("127.0.0.1", 0, cache_seconds=value)  # type: ignore[arg-type]
