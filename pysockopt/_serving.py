"""Bounded HTTP serving of a collector: one scan in flight, shared; none for a client that has gone.

What ``pysockopt.prometheus.serve()`` and ``pysockopt exporter --listen`` both run (the library
user gets the same bounds as the command): ``Shared`` wraps a collector so that requests during
a scan share it and a scan answers the requests of a short window after it; ``serve()`` runs
prometheus_client's WSGI app in a threading server whose request handler drops a request whose
client has already gone before any scan. prometheus_client (the extra) is imported only here,
when a server starts.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.registry import Collector

__all__ = ["DEFAULT_CACHE_SECONDS", "REQUEST_TIMEOUT", "BoundedHandler", "Shared",
           "client_gone", "serve"]

#: One scan answers the requests of this window by default (Prometheus servers of an HA pair
#: scraping within a second of each other share it).
DEFAULT_CACHE_SECONDS = 1.0
#: A connection that sends nothing (a request never finished) for this long is closed.
REQUEST_TIMEOUT = 60.0


# --- bounded scrapes: one scan in flight, shared; none for a client that has gone


class Shared:
    """A collector that takes its inner collector's scan once for many requests.

    Requests that come while a scan runs wait for it and are answered from it (single
    flight); a request within ``cache_seconds`` of a scan's end is answered from that scan.
    A scan that raised raises in every request that shared it, and is not kept.
    ``scans`` counts the inner collections taken, ``waiting`` the requests waiting for one.
    """

    def __init__(self, inner: Collector, cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self._inner = inner
        self._window = cache_seconds
        self._cond = threading.Condition()
        self._running = False
        self._round = 0  # finished scans
        self._result: list[Any] | BaseException | None = None
        self._done_at = -math.inf
        self.scans = 0
        self.waiting = 0

    def describe(self) -> Iterator[Any]:
        """Name the inner collector's metrics (registration takes no scan)."""
        describe = getattr(self._inner, "describe", None)
        return iter(describe() if describe is not None else ())

    def collect(self) -> Iterator[Any]:
        """Yield the families of the scan in flight, of one within the window, or of a new one."""
        with self._cond:
            if self._running:
                seen = self._round
                self.waiting += 1
                try:
                    self._cond.wait_for(lambda: self._round != seen)
                finally:
                    self.waiting -= 1
                return self._answer(self._result)
            if isinstance(self._result, list) and \
                    time.monotonic() - self._done_at <= self._window:
                return iter(self._result)
            self._running = True
            self.scans += 1
        result: list[Any] | BaseException
        try:
            result = list(self._inner.collect())
        except BaseException as err:  # every sharer gets it, as the lone caller would
            result = err
        with self._cond:
            self._result = result
            self._done_at = time.monotonic()
            self._running = False
            self._round += 1
            self._cond.notify_all()
        return self._answer(result)

    @staticmethod
    def _answer(result: list[Any] | BaseException | None) -> Iterator[Any]:
        if isinstance(result, BaseException):
            raise result
        return iter(result or ())


def client_gone(conn: socket.socket) -> bool:
    """Whether the peer has closed (FIN: EOF on read) or reset the connection."""
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLRDHUP)
    return any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL)
               for _, ev in poller.poll(0))


class BoundedHandler(WSGIRequestHandler):
    """prometheus_client's WSGI request handling, but no scan for a client that has gone.

    A request read to its end that the client then abandoned (a scraper that timed out), or
    one cut short by the client closing (headers ending at EOF), is dropped before the app
    runs: the connection is closed at once (no CLOSE_WAIT left), and no scan is taken. A
    client that half-closes after a complete request (shutdown(SHUT_WR)) counts as gone.
    """

    timeout = REQUEST_TIMEOUT  # a request never finished holds a thread this long at most

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if client_gone(self.connection):
            self.close_connection = True
            return False
        return True

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing (as prometheus_client's own handler)."""


def serve(host: str, port: int, collector: Collector) -> WSGIServer:
    """Serve ``collector`` on ``host``:``port`` in a daemon thread; return the server.

    prometheus_client's WSGI app and threading server (as its ``start_http_server``), with
    the request handler above. ``port`` 0 takes a free port (``server.server_address``).
    """
    from wsgiref.simple_server import make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family
        request_queue_size = 128  # socketserver's 5 drops SYNs under a burst of scrapers

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=BoundedHandler)
    threading.Thread(target=server.serve_forever, name="pysockopt-exporter-http",
                     daemon=True).start()
    return server
