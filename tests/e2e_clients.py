"""The client side of tests/test_clients_e2e.py: every client of pysockopt.integrations at once.

Run by the test inside the client's network namespace (``ip netns exec A python
e2e_clients.py SPEC_JSON``), so that every socket any library makes, in any of its threads,
is in that namespace. Each cell (one client library with one set of settings) runs in its own
thread (the asyncio ones with their own event loop) and does:

1. setup: connect and make one request, so an idle connection sits in the client's pool
   (mode ``connect``: nothing, the connection is made by the call);
2. waits for "go";
3. the call: ``idle`` mode a request the server never answers (the call blocks on an idle
   connection with its request acknowledged); ``inflight`` and ``connect`` a request the
   server would answer at once, sent after the cut (unacknowledged data on the pooled
   connection; or a connect whose SYN is dropped).

Protocol on stdout, one JSON object a line: ``{"ready": ...}`` once every cell is set up (in
``idle`` mode the calls then start and ``{"blocked": true}`` follows 1.5 s later); the test
cuts the link and, in ``inflight``/``connect`` mode, writes ``go`` on stdin; the driver ends
with ``{"results": [...]}``: per cell the CLOCK_MONOTONIC time the call started and raised
(the test's clock is the same), the exception's type and chain, and ``pysockopt.triage()``'s
verdict, computed here on the real exception.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pysockopt
from pysockopt import KeepaliveConfig, integrations

SPEC: dict[str, Any] = json.loads(sys.argv[1]) if __name__ == "__main__" else {}


def _exc_chain(exc: BaseException) -> list[str]:
    chain: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 12:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        errno = getattr(x, "errno", None)
        chain.append(f"{type(x).__module__}.{type(x).__qualname__}"
                     + (f"[{errno}]" if isinstance(errno, int) else ""))
        todo += [y for y in (x.__cause__, x.__context__) if y is not None]
        todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(x, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return chain


class Cell:
    """One client library with one set of settings, driven through setup and one call."""

    def __init__(self, name: str, client: str, variant: str, cfg: KeepaliveConfig,
                 mode: str, servers: dict[str, list[Any]]) -> None:
        self.name, self.client, self.variant, self.cfg = name, client, variant, cfg
        self.mode, self.servers = mode, servers
        self.rec = variant == "recommended"
        self.started: float | None = None
        self.raised: float | None = None
        self.error: BaseException | None = None
        self.returned = False
        self.setup_error: str | None = None
        self.ready = threading.Event()
        self.done = threading.Event()

    # -- the thread

    def run(self, go: threading.Event) -> None:
        try:
            fn = getattr(self, f"_{self.client}")
            result = fn(go)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        except BaseException as exc:  # the call's own exception is recorded by _timed
            if self.started is None:
                self.setup_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            self.done.set()

    def _timed(self, call: Callable[[], object]) -> None:
        self.started = time.monotonic()
        try:
            call()
            self.returned = True
        except BaseException as exc:
            self.raised = time.monotonic()
            self.error = exc

    async def _atimed(self, call: Callable[[], Awaitable[object]]) -> None:
        self.started = time.monotonic()
        try:
            await call()
            self.returned = True
        except BaseException as exc:
            self.raised = time.monotonic()
            self.error = exc

    def _wait_go(self, go: threading.Event) -> None:
        self.ready.set()
        go.wait()

    async def _await_go(self, go: threading.Event) -> None:
        self.ready.set()
        await asyncio.to_thread(go.wait)

    # -- what each cell asks

    @property
    def connect_timeout(self) -> float:
        """The recommended connect timeout: the budget (worst_case_detection)."""
        return float(self.cfg.worst_case_detection or self.cfg.detection_time)

    def _http(self, tls: bool = False) -> tuple[str, str | None]:
        if tls:
            host, port, ca = self.servers["https"]
            return f"https://{host}:{port}/", ca
        host, port = self.servers["http"]
        return f"http://{host}:{port}/", None

    def _path(self) -> str:
        return "hang" if self.mode == "idle" else "ok"

    # -- HTTP

    def _requests(self, go: threading.Event, tls: bool = False) -> None:
        base, ca = self._http(tls)
        session = integrations.requests_session(self.cfg)
        verify: str | bool = ca if ca is not None else True
        if self.mode != "connect":
            session.get(base + "ok", timeout=30, verify=verify).raise_for_status()
        self._wait_go(go)
        self._timed(lambda: session.get(base + self._path(), verify=verify))

    def _requests_tls(self, go: threading.Event) -> None:
        self._requests(go, tls=True)

    def _urllib3(self, go: threading.Event) -> None:
        import urllib3

        base, _ = self._http()
        pm = urllib3.PoolManager(socket_options=integrations.urllib3_socket_options(self.cfg))
        kwargs: dict[str, Any] = {"timeout": None}
        if self.rec:
            kwargs["retries"] = urllib3.Retry(0, read=0, connect=0)
        if self.mode != "connect":
            assert pm.request("GET", base + "ok", timeout=30).status == 200
        self._wait_go(go)
        self._timed(lambda: pm.request("GET", base + self._path(), **kwargs))

    def _httpx(self, go: threading.Event) -> None:
        import httpx

        base, _ = self._http()
        client = httpx.Client(transport=integrations.httpx_transport(self.cfg), timeout=None)
        if self.mode != "connect":
            client.get(base + "ok", timeout=30).raise_for_status()
        self._wait_go(go)
        self._timed(lambda: client.get(base + self._path()))

    async def _httpx_async(self, go: threading.Event) -> None:
        import httpx

        base, _ = self._http()
        async with httpx.AsyncClient(transport=integrations.httpx_async_transport(self.cfg),
                                     timeout=None) as client:
            if self.mode != "connect":
                (await client.get(base + "ok", timeout=30)).raise_for_status()
            await self._await_go(go)
            await self._atimed(lambda: client.get(base + self._path()))

    async def _aiohttp(self, go: threading.Event) -> None:
        import aiohttp

        base, _ = self._http()
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=integrations.aiohttp_connector(self.cfg),
                                         timeout=timeout) as session:
            if self.mode != "connect":
                async with session.get(base + "ok") as resp:
                    await resp.read()

            async def call() -> None:
                async with session.get(base + self._path()) as resp:
                    await resp.read()

            await self._await_go(go)
            await self._atimed(call)

    # -- redis

    def _redis_args(self, tls: bool, aio: bool = False) -> dict[str, Any]:
        if tls:
            host, port, ca = self.servers["redis_tls"]
            extra: dict[str, Any] = {"ssl": True, "ssl_ca_certs": ca}
        else:
            host, port = self.servers["redis"]
            extra = {}
        kwargs = {"host": host, "port": port, "socket_timeout": None, **extra}
        # default: redis-py's own retries (retries=None); recommended: redis_kwargs' (none)
        kwargs.update(integrations.redis_kwargs(self.cfg, retries=0 if self.rec else None,
                                                asyncio=aio))
        return kwargs

    def _redis_call(self, client: Any) -> Callable[[], Any]:
        if self.mode == "idle":
            return lambda: client.blpop(["pysockopt-e2e-nokey"], 0)
        return lambda: client.get("pysockopt-e2e")

    def _redis(self, go: threading.Event, tls: bool = False) -> None:
        import redis

        client = redis.Redis(**self._redis_args(tls))
        if self.mode != "connect":
            client.ping()
        self._wait_go(go)
        self._timed(self._redis_call(client))

    def _redis_tls(self, go: threading.Event) -> None:
        self._redis(go, tls=True)

    async def _redis_asyncio(self, go: threading.Event) -> None:
        import redis.asyncio

        client = redis.asyncio.Redis(**self._redis_args(False, aio=True))
        if self.mode != "connect":
            await client.ping()
        await self._await_go(go)
        await self._atimed(self._redis_call(client))

    # -- PostgreSQL

    def _pg_sql(self) -> str:
        return "select pg_sleep(3600)" if self.mode == "idle" else "select 1"

    def _libpq(self) -> dict[str, Any]:
        host, port = self.servers["pg"]
        kwargs: dict[str, Any] = {"host": host, "port": port, "user": "postgres",
                                  "dbname": "postgres"}
        kw: dict[str, Any] = dict(integrations.libpq_kwargs(self.cfg))
        if not self.rec:
            kw.pop("connect_timeout", None)
        kwargs.update(kw)
        return kwargs

    def _psycopg(self, go: threading.Event) -> None:
        import psycopg

        conn: list[Any] = []
        if self.mode != "connect":
            conn.append(psycopg.connect(**self._libpq(), autocommit=True))
            conn[0].execute("select 1")

        def call() -> None:
            if not conn:
                conn.append(psycopg.connect(**self._libpq(), autocommit=True))
            conn[0].execute(self._pg_sql()).fetchall()

        self._wait_go(go)
        self._timed(call)

    def _psycopg2(self, go: threading.Event) -> None:
        import psycopg2

        conn: list[Any] = []
        if self.mode != "connect":
            conn.append(psycopg2.connect(**self._libpq()))
            conn[0].autocommit = True

        def call() -> None:
            if not conn:
                conn.append(psycopg2.connect(**self._libpq()))
            with conn[0].cursor() as cur:
                cur.execute(self._pg_sql())
                cur.fetchall()

        self._wait_go(go)
        self._timed(call)

    def _sqlalchemy(self, go: threading.Event, pre_ping: bool = False) -> None:
        import sqlalchemy

        host, port = self.servers["pg"]
        kw = self._libpq()
        args = {k: v for k, v in kw.items() if k not in ("host", "port", "user", "dbname")}
        engine = sqlalchemy.create_engine(
            f"postgresql+psycopg://postgres@{host}:{port}/postgres", connect_args=args,
            pool_pre_ping=pre_ping)
        if self.mode != "connect":
            with engine.connect() as c:
                c.execute(sqlalchemy.text("select 1"))

        def call() -> None:
            with engine.connect() as c:
                c.execute(sqlalchemy.text(self._pg_sql())).fetchall()

        self._wait_go(go)
        self._timed(call)

    def _sqlalchemy_pre_ping(self, go: threading.Event) -> None:
        self._sqlalchemy(go, pre_ping=True)

    async def _asyncpg(self, go: threading.Event) -> None:
        import asyncpg

        host, port = self.servers["pg"]
        cls = integrations.asyncpg_connection_class(self.cfg)
        kwargs: dict[str, Any] = {"host": host, "port": port, "user": "postgres",
                                  "database": "postgres", "connection_class": cls}
        if self.rec:
            kwargs["timeout"] = self.connect_timeout
        conn: list[Any] = []
        if self.mode != "connect":
            conn.append(await asyncpg.connect(**kwargs))
            await conn[0].fetch("select 1")

        async def call() -> None:
            if not conn:
                conn.append(await asyncpg.connect(**kwargs))
            await conn[0].fetch(self._pg_sql())

        await self._await_go(go)
        await self._atimed(call)

    # -- gRPC

    def _grpc(self, go: threading.Event) -> None:
        import grpc

        host, port = self.servers["grpc"]
        channel = grpc.insecure_channel(f"{host}:{port}",
                                        options=integrations.grpc_channel_options(self.cfg))
        method = "Hang" if self.mode == "idle" else "Echo"
        stub: Any = channel.unary_unary(f"/pysockopt.Test/{method}")
        if self.mode != "connect":
            ok: Any = channel.unary_unary("/pysockopt.Test/Echo")
            assert ok(b"x", timeout=30) == b"x"
        kwargs: dict[str, Any] = {}
        if self.rec:
            kwargs["timeout"] = None if self.mode != "connect" else self.connect_timeout
        else:  # the call waits for the channel to reconnect instead of failing
            kwargs["wait_for_ready"] = True
        self._wait_go(go)
        self._timed(lambda: stub(b"x", **kwargs))

    # -- plain asyncio

    async def _asyncio(self, go: threading.Event) -> None:
        host, port = self.servers["http"]
        request = f"GET /{self._path()} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            opened = asyncio.open_connection(host, port)
            reader, writer = await (asyncio.wait_for(opened, self.connect_timeout)
                                    if self.rec else opened)
            integrations.asyncio_apply(writer, self.cfg)
            return reader, writer

        streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        if self.mode != "connect":
            streams.append(await connect())
            reader, writer = streams[0]
            writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"origin /ok")

        async def call() -> None:
            if not streams:
                streams.append(await connect())
            reader, writer = streams[0]
            writer.write(request)
            await writer.drain()
            if not await reader.read(1):
                raise EOFError("the server closed the connection")

        await self._await_go(go)
        await self._atimed(call)

    # -- the report

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "client": self.client,
                               "variant": self.variant, "started": self.started,
                               "raised": self.raised, "returned": self.returned,
                               "setup_error": self.setup_error}
        if self.error is not None:
            verdict = pysockopt.triage(self.error)
            out.update(type=f"{type(self.error).__module__}.{type(self.error).__qualname__}",
                       message=str(self.error)[:300], chain=_exc_chain(self.error),
                       action=verdict.action.name, category=verdict.category.name,
                       reason=verdict.reason[:300])
        return out


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


#: Every library a cell may use, imported once before the cells' threads start (imports in
#: several threads at once can deadlock on the import lock of a package's submodules).
_LIBRARIES = {"requests": ["requests"], "requests_tls": ["requests"], "urllib3": ["urllib3"],
              "httpx": ["httpx"], "httpx_async": ["httpx"], "aiohttp": ["aiohttp"],
              "redis": ["redis"], "redis_tls": ["redis"], "redis_asyncio": ["redis.asyncio"],
              "psycopg": ["psycopg"], "psycopg2": ["psycopg2"],
              "sqlalchemy": ["sqlalchemy", "psycopg"],
              "sqlalchemy_pre_ping": ["sqlalchemy", "psycopg"], "asyncpg": ["asyncpg"],
              "grpc": ["grpc"], "asyncio": []}


def main() -> None:
    import importlib

    for _, client, _ in SPEC["cells"]:
        for module in _LIBRARIES[client]:
            importlib.import_module(module)
    cfg = KeepaliveConfig(*SPEC["config"])
    mode: str = SPEC["mode"]
    go = threading.Event()
    cells = [Cell(name, client, variant, cfg, mode, SPEC["servers"])
             for name, client, variant in SPEC["cells"]]
    threads = [threading.Thread(target=c.run, args=(go,), daemon=True) for c in cells]
    for t in threads:
        t.start()
    for c in cells:
        c.ready.wait(120)
    _say(ready=[c.name for c in cells if c.setup_error is None],
         failed={c.name: c.setup_error for c in cells if c.setup_error is not None})
    if mode == "idle":
        go.set()
        time.sleep(1.5)  # the requests are on the wire and acknowledged: the connections idle
        _say(blocked=True)
    elif sys.stdin.readline().strip() == "go":
        go.set()
    else:
        os._exit(1)
    deadline = time.monotonic() + float(SPEC["limit"])
    for c in cells:
        c.done.wait(max(0.0, deadline - time.monotonic()))
    _say(results=[c.result() for c in cells])
    sys.stdout.flush()
    os._exit(0)  # calls still blocked stay blocked: do not wait for their threads


if __name__ == "__main__":
    main()
