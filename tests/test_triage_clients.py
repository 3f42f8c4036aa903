"""pysockopt.triage() of the exceptions client libraries really raise, from real failures.

Each client (requests, urllib3, httpx, aiohttp, redis-py, psycopg 3, psycopg2, asyncpg, grpcio)
meets three failures on loopback: a port nobody listens on (connection refused), a server
that resets the connection after reading the request (SO_LINGER 0: reset by peer), and, for
those with a read timeout, a server that never answers (the client's own timeout). The
libraries wrap the socket's error (requests: an OSError without errno carrying urllib3's in
its args; libpq: the strerror text in its message); triage must find the errno and say
RECONNECT. A dead peer found by keepalive (ETIMEDOUT / EHOSTUNREACH through each client) is
checked end to end in tests/test_clients_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from pysockopt import Action, ErrorCategory, triage

C = ErrorCategory


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port  # closed on return: nobody listens there now


@contextlib.contextmanager
def _server(behaviour: str) -> Iterator[int]:
    """A loopback server that ``reset``s each connection after reading, or ``hang``s."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if behaviour == "reset":
                conn.settimeout(10)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in held:
            conn.close()


def _raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the call did not fail")


def _araised(coro: Callable[[], Coroutine[Any, Any, object]]) -> BaseException:
    async def main() -> BaseException:
        try:
            await coro()
        except Exception as exc:
            return exc
        raise AssertionError("the call did not fail")

    return asyncio.run(main())


def _says(exc: BaseException, category: ErrorCategory, action: Action = Action.RECONNECT) -> None:
    verdict = triage(exc)
    assert (verdict.category, verdict.action) == (category, action), (
        f"{type(exc).__module__}.{type(exc).__name__}: {exc!r} -> {verdict}")


def test_requests() -> None:
    requests = pytest.importorskip("requests")
    exc = _raised(lambda: requests.get(f"http://127.0.0.1:{_closed_port()}/", timeout=10))
    assert isinstance(exc, OSError) and exc.errno is None  # what stopped the walk before
    _says(exc, C.REFUSED)
    with _server("reset") as port:
        _says(_raised(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=10)),
              C.PEER_RESET)
    with _server("hang") as port:
        exc = _raised(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=0.3))
        assert isinstance(exc, requests.exceptions.ReadTimeout)
        _says(exc, C.TIMEOUT)


def test_urllib3() -> None:
    urllib3 = pytest.importorskip("urllib3")
    pm = urllib3.PoolManager()
    _says(_raised(lambda: pm.request("GET", f"http://127.0.0.1:{_closed_port()}/",
                                     retries=False)), C.REFUSED)
    with _server("reset") as port:
        _says(_raised(lambda: pm.request("GET", f"http://127.0.0.1:{port}/", retries=False)),
              C.PEER_RESET)
    with _server("hang") as port:
        _says(_raised(lambda: pm.request("GET", f"http://127.0.0.1:{port}/", retries=False,
                                         timeout=0.3)), C.TIMEOUT)


def test_httpx() -> None:
    httpx = pytest.importorskip("httpx")
    _says(_raised(lambda: httpx.get(f"http://127.0.0.1:{_closed_port()}/")), C.REFUSED)
    with _server("reset") as port:
        _says(_raised(lambda: httpx.get(f"http://127.0.0.1:{port}/")), C.PEER_RESET)
    with _server("hang") as port:
        exc = _raised(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=0.3))
        assert isinstance(exc, httpx.ReadTimeout)
        _says(exc, C.TIMEOUT)


def test_aiohttp() -> None:
    aiohttp = pytest.importorskip("aiohttp")

    def get(port: int, timeout: float = 10) -> Callable[[], Coroutine[Any, Any, object]]:
        async def call() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                    s.get(f"http://127.0.0.1:{port}/") as resp:
                await resp.read()
        return call

    _says(_araised(get(_closed_port())), C.REFUSED)
    with _server("reset") as port:
        exc = _araised(get(port))
        assert triage(exc).action is Action.RECONNECT, (exc, triage(exc))
        assert triage(exc).category in (C.PEER_RESET, C.PEER_CLOSED), (exc, triage(exc))
    with _server("hang") as port:
        _says(_araised(get(port, 0.3)), C.TIMEOUT)


def test_redis_py() -> None:
    redis = pytest.importorskip("redis")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    def client(port: int, **kw: Any) -> Any:
        return redis.Redis(port=port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=10,
                           **kw)

    exc = _raised(lambda: client(_closed_port()).ping())
    assert isinstance(exc, redis.exceptions.ConnectionError)
    _says(exc, C.REFUSED)
    with _server("hang") as port:
        exc = _raised(lambda: client(port, socket_timeout=0.3).ping())
        assert isinstance(exc, redis.exceptions.TimeoutError)
        _says(exc, C.TIMEOUT)


def test_redis_asyncio() -> None:
    redis_asyncio = pytest.importorskip("redis.asyncio")
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    async def ping() -> None:
        client = redis_asyncio.Redis(port=_closed_port(), retry=Retry(NoBackoff(), 0))
        try:
            await client.ping()
        finally:
            await client.aclose()

    _says(_araised(ping), C.REFUSED)


def test_psycopg3() -> None:
    psycopg = pytest.importorskip("psycopg")
    exc = _raised(lambda: psycopg.connect(host="127.0.0.1", port=_closed_port(),
                                          connect_timeout=10))
    assert isinstance(exc, psycopg.OperationalError)
    _says(exc, C.REFUSED)
    with _server("reset") as port:
        exc = _raised(lambda: psycopg.connect(host="127.0.0.1", port=port, sslmode="disable",
                                              connect_timeout=10))
        assert triage(exc).action is Action.RECONNECT, (exc, triage(exc))


def test_psycopg2() -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    exc = _raised(lambda: psycopg2.connect(host="127.0.0.1", port=_closed_port(),
                                           connect_timeout=10))
    assert isinstance(exc, psycopg2.OperationalError)
    _says(exc, C.REFUSED)
    with _server("reset") as port:
        exc = _raised(lambda: psycopg2.connect(host="127.0.0.1", port=port, sslmode="disable",
                                               connect_timeout=10))
        assert triage(exc).action is Action.RECONNECT, (exc, triage(exc))


def test_asyncpg() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    closed = _closed_port()
    _says(_araised(lambda: asyncpg.connect(host="127.0.0.1", port=closed, timeout=10)),
          C.REFUSED)
    with _server("reset") as reset:
        exc = _araised(lambda: asyncpg.connect(host="127.0.0.1", port=reset, ssl=False,
                                               timeout=10))
        assert triage(exc).action is Action.RECONNECT, (exc, triage(exc))
    with _server("hang") as hang:
        _says(_araised(lambda: asyncpg.connect(host="127.0.0.1", port=hang, ssl=False,
                                               timeout=0.3)), C.TIMEOUT)


def test_grpc() -> None:
    grpc = pytest.importorskip("grpc")
    with grpc.insecure_channel(f"127.0.0.1:{_closed_port()}") as channel:
        call: Any = channel.unary_unary("/pysockopt.Test/Echo")
        exc = _raised(lambda: call(b"x", timeout=10))
    assert isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE
    verdict = triage(exc)
    assert verdict.action is Action.RECONNECT, (exc, verdict)
    with _server("hang") as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/pysockopt.Test/Echo")
        exc = _raised(lambda: call(b"x", timeout=0.5))
    _says(exc, C.TIMEOUT)
