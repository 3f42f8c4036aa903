"""pysockopt.integrations against the real clients and real servers on loopback.

Every check looks from outside the client: the client's socket is found in this process by
matching the sock_diag entry connected to the server's port to a /proc/self/fd link, and its
options are read through that descriptor (read_keepalive), its timer from sock_diag and
`ss -tno`. The servers (PostgreSQL, redis-server, an HTTP origin and proxy, grpcio) are
started here on non-default ports and stopped by PID (tests/realservers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

import pysockopt
from pysockopt import KeepaliveConfig, Timer, integrations

sys.path.insert(0, str(Path(__file__).parent))
import realservers

if TYPE_CHECKING:  # the client libraries are imported by the tests that use them
    import grpc
    import requests

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "integrations.md"

#: Configs with values no client or kernel uses by default, a for_detection one (whatever
#: its current formula), one that leaves TCP_USER_TIMEOUT alone, one that asks for the
#: system's default user timeout (0), and the platform's upper limits.
CONFIGS = [
    pytest.param(KeepaliveConfig(17, 3, 4, 29000), id="17-3-4-uto29000"),
    pytest.param(KeepaliveConfig.for_detection(20), id="for_detection20"),
    pytest.param(KeepaliveConfig(23, 2, 5), id="23-2-5-no-uto"),
    pytest.param(KeepaliveConfig(11, 1, 1, 0), id="11-1-1-uto0"),
    pytest.param(KeepaliveConfig(32767, 32767, 127, 2**31 - 1), id="limits"),
]


# --- finding a client's socket from outside the client


def client_sockets(port: int) -> list[tuple[int, pysockopt.Connection]]:
    """This process's descriptors for TCP sockets connected to ``port`` (their remote port)."""
    by_inode = {c.inode: c for c in pysockopt.connections(port=port)
                if c.remote_port == port and c.inode}
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, another thread's)
        match = re.fullmatch(r"socket:\[(\d+)\]", link)
        if match and int(match[1]) in by_inode:
            found.append((int(name), by_inode[int(match[1])]))
    return found


def ss_timers(port: int) -> list[str]:
    """The timer names `ss -tno` shows for sockets whose remote port is ``port``."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", "dport", f"= :{port}"],
                         capture_output=True, text=True, check=True).stdout
    return [m or "off" for m in (
        (re.search(r"timer:\((\w+),", line) or [None, None])[1] for line in out.splitlines()
        if line.strip())]


def no_client_sockets(port: int) -> None:
    gc.collect()  # a pool dropped by an earlier test closes its sockets when collected
    assert client_sockets(port) == [], "sockets to the server left over: the check would lie"


def assert_carries(port: int, cfg: KeepaliveConfig, *, at_least: int = 1) -> list[int]:
    """Every client socket to ``port`` has ``cfg`` in force and the keepalive timer armed."""
    found = client_sockets(port)
    assert len(found) >= at_least, f"no client socket to port {port} found"
    for fd, conn in found:
        ka = pysockopt.read_keepalive(fd)
        assert ka.enabled, f"fd {fd}: SO_KEEPALIVE off"
        assert (ka.idle, ka.interval, ka.count) == (cfg.idle, cfg.interval, cfg.count)
        assert ka.user_timeout_ms == (cfg.user_timeout_ms or 0)
        assert conn.timer == Timer.KEEPALIVE, f"fd {fd}: sock_diag timer {conn.timer!r}"
        assert conn.retrans == 0
    if shutil.which("ss"):
        assert ss_timers(port) == ["keepalive"] * len(found)
    return [fd for fd, _ in found]


def assert_no_keepalive(port: int) -> None:
    found = client_sockets(port)
    assert found, f"no client socket to port {port} found"
    for fd, conn in found:
        assert not pysockopt.read_keepalive(fd).enabled
        assert conn.timer != Timer.KEEPALIVE


# --- servers (module scope: one of each for the whole file)


# The HTTP servers are made per test: a module-wide one was seen to stop answering for a while
# (a request through the proxy found no answer in 10 s, an aiohttp GET waited out its timeout).
@pytest.fixture
def origin() -> Iterator[realservers.Http]:
    with realservers.http_server() as srv:
        yield srv


@pytest.fixture
def proxy() -> Iterator[realservers.Http]:
    with realservers.http_server(proxy=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def redis_srv() -> Iterator[realservers.Redis]:
    reason = realservers.redis_missing()
    if reason:
        pytest.skip(reason)
    with realservers.redis_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def pg() -> Iterator[realservers.Postgres]:
    reason = realservers.postgres_missing()
    if reason:
        pytest.skip(reason)
    with realservers.postgres() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests and httpx read these; a test's traffic must go where the test says.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- the module itself


def test_import_loads_no_client_library() -> None:
    libs = ["requests", "urllib3", "httpx", "httpcore", "aiohttp", "redis", "psycopg",
            "psycopg2", "asyncpg", "grpc", "sqlalchemy"]
    code = ("import sys, pysockopt, pysockopt.integrations as i; "
            f"print(sorted(m for m in {libs!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


def test_public_names_documented() -> None:
    for name in integrations.__all__:
        obj = getattr(integrations, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_bad_config_is_a_type_error() -> None:
    for fn in (integrations.urllib3_socket_options, integrations.redis_kwargs,
               integrations.libpq_kwargs, integrations.grpc_channel_options,
               integrations.grpc_server_options, integrations.aiohttp_socket_factory):
        with pytest.raises(TypeError, match="KeepaliveConfig"):
            fn((10, 2, 3))  # type: ignore[arg-type]  # a tuple, not a config: on purpose


# --- urllib3 / requests


@pytest.mark.parametrize("cfg", CONFIGS)
def test_urllib3_socket_options_keep_urllib3_defaults(cfg: KeepaliveConfig) -> None:
    from urllib3.connection import HTTPConnection

    opts = integrations.urllib3_socket_options(cfg)
    assert opts == HTTPConnection.default_socket_options + cfg.socket_options()
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in opts
    assert integrations.urllib3_socket_options(cfg, proxy=True) == cfg.socket_options()


@pytest.mark.parametrize("cfg", CONFIGS)
def test_urllib3_poolmanager(origin: realservers.Http, cfg: KeepaliveConfig) -> None:
    import urllib3

    no_client_sockets(origin.port)
    with urllib3.PoolManager(socket_options=integrations.urllib3_socket_options(cfg)) as http:
        assert http.request("GET", origin.url + "u").data == b"origin /u"
        for fd in assert_carries(origin.port, cfg):
            dup = socket.socket(fileno=os.dup(fd))
            with dup:
                assert dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    no_client_sockets(origin.port)


def test_urllib3_proxymanager_ignores_default_socket_options(
    origin: realservers.Http, proxy: realservers.Http
) -> None:
    """The known case: changing HTTPConnection.default_socket_options (a common recipe) does
    not reach ProxyManager's connections, whose pools pass socket_options=[]; and rebinding
    the attribute reaches nothing, as urllib3 bound the list as a default argument."""
    import urllib3
    from urllib3.connection import HTTPConnection

    cfg = KeepaliveConfig(19, 3, 3, 15000)
    defaults = HTTPConnection.default_socket_options
    HTTPConnection.default_socket_options = [*defaults, *cfg.socket_options()]
    try:
        with urllib3.PoolManager() as direct:
            direct.request("GET", origin.url)
            assert_no_keepalive(origin.port)  # rebinding: not even direct connections
    finally:
        HTTPConnection.default_socket_options = defaults
    no_client_sockets(origin.port)
    size = len(defaults)
    defaults.extend(cfg.socket_options())  # in place: the list urllib3 actually uses
    try:
        with urllib3.PoolManager() as direct:
            direct.request("GET", origin.url)
            assert_carries(origin.port, cfg)
        no_client_sockets(proxy.port)
        with urllib3.ProxyManager(proxy.url) as via:
            assert via.request("GET", origin.url + "p").data == b"origin /p"
            assert_no_keepalive(proxy.port)  # ignored on the proxy connection
    finally:
        del defaults[size:]
    # The explicit list works through the proxy too.
    opts = integrations.urllib3_socket_options(cfg, proxy=True)
    with urllib3.ProxyManager(proxy.url, socket_options=opts) as via:
        via.request("GET", origin.url + "p")
        assert_carries(proxy.port, cfg)
    no_client_sockets(proxy.port)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_requests_adapter_direct_and_through_proxy(
    origin: realservers.Http, proxy: realservers.Http, cfg: KeepaliveConfig
) -> None:
    import requests

    no_client_sockets(origin.port)
    no_client_sockets(proxy.port)
    with requests.Session() as session:
        session.mount("http://", integrations.requests_adapter(cfg, pool_maxsize=4))
        assert session.get(origin.url + "r").text == "origin /r"
        assert_carries(origin.port, cfg)
        # No reference kept to the response: it would keep its pool's connection alive.
        text, via = _get(session, origin.url + "rp", proxies={"http": proxy.url})
        assert text == "origin /rp" and via.endswith("test-proxy")
        assert_carries(proxy.port, cfg)
    no_client_sockets(origin.port)
    no_client_sockets(proxy.port)


def _get(session: requests.Session, url: str, **kwargs: Any) -> tuple[str, str]:
    resp = session.get(url, **kwargs)
    return resp.text, resp.headers.get("Via", "")


def test_requests_adapter_overriding_only_init_poolmanager_misses_proxies(
    origin: realservers.Http, proxy: realservers.Http
) -> None:
    """Why requests_adapter also overrides proxy_manager_for: the usual recipe does not."""
    import requests
    from requests.adapters import HTTPAdapter

    cfg = KeepaliveConfig(21, 2, 3)
    opts = integrations.urllib3_socket_options(cfg)

    class Recipe(HTTPAdapter):
        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                             **pool_kwargs: Any) -> None:
            pool_kwargs["socket_options"] = opts
            super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    no_client_sockets(proxy.port)
    with requests.Session() as session:
        session.mount("http://", Recipe())
        session.get(origin.url)
        assert_carries(origin.port, cfg)
        session.get(origin.url, proxies={"http": proxy.url})
        assert_no_keepalive(proxy.port)
    no_client_sockets(proxy.port)


def test_requests_session_and_pickle(origin: realservers.Http) -> None:
    import pickle

    cfg = KeepaliveConfig(13, 4, 2, 9000)
    no_client_sockets(origin.port)
    with integrations.requests_session(cfg, pool_maxsize=3) as session:
        session.get(origin.url)
        assert_carries(origin.port, cfg)
        clone = pickle.loads(pickle.dumps(session))
    no_client_sockets(origin.port)
    with clone:
        adapter = clone.get_adapter(origin.url)
        assert adapter._pool_maxsize == 3
        clone.get(origin.url)
        assert_carries(origin.port, cfg)
    no_client_sockets(origin.port)


# --- httpx


@pytest.mark.parametrize("cfg", CONFIGS)
def test_httpx_transport(origin: realservers.Http, cfg: KeepaliveConfig) -> None:
    import httpx

    no_client_sockets(origin.port)
    with httpx.Client(transport=integrations.httpx_transport(cfg)) as client:
        assert client.get(origin.url + "h").text == "origin /h"
        assert_carries(origin.port, cfg)
    no_client_sockets(origin.port)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_httpx_async_transport(origin: realservers.Http, cfg: KeepaliveConfig) -> None:
    import httpx

    no_client_sockets(origin.port)

    async def main() -> None:
        transport = integrations.httpx_async_transport(cfg)
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(origin.url + "a")).text == "origin /a"
            assert_carries(origin.port, cfg)

    run(main())
    no_client_sockets(origin.port)


def test_httpx_transports_bound_an_unbounded_connect(origin: realservers.Http) -> None:
    """httpcore sets the options after connect(): TCP_USER_TIMEOUT cannot end SYN retries."""
    import httpx

    cfg = KeepaliveConfig.for_detection(5)

    def connect_timeouts(response: httpx.Response) -> Any:
        return response.request.extensions["timeout"]["connect"]

    with httpx.Client(transport=integrations.httpx_transport(cfg), timeout=None) as client:
        assert connect_timeouts(client.get(origin.url)) == cfg.worst_case_detection == 5.0
        mine = httpx.Timeout(None, connect=1.5)
        assert connect_timeouts(client.get(origin.url, timeout=mine)) == 1.5  # kept

    async def main() -> None:
        transport = integrations.httpx_async_transport(cfg)
        async with httpx.AsyncClient(transport=transport, timeout=None) as client:
            assert connect_timeouts(await client.get(origin.url)) == 5.0

    run(main())


def test_httpx_through_a_proxy_drops_socket_options(
    origin: realservers.Http, proxy: realservers.Http
) -> None:
    """Why httpx_transport refuses proxy=: httpcore's HTTPProxy opens its connections without
    the socket_options it was given, and Client(proxy=...) mounts httpx's own transport."""
    import httpx

    cfg = KeepaliveConfig(14, 2, 2)
    no_client_sockets(proxy.port)
    raw = httpx.HTTPTransport(socket_options=cfg.socket_options(), proxy=proxy.url)
    with httpx.Client(transport=raw) as client:
        assert client.get(origin.url + "x").text == "origin /x"
        assert_no_keepalive(proxy.port)
    with httpx.Client(transport=integrations.httpx_transport(cfg), proxy=proxy.url) as client:
        assert client.get(origin.url + "x").text == "origin /x"
        assert_no_keepalive(proxy.port)
    no_client_sockets(proxy.port)
    for factory in (integrations.httpx_transport, integrations.httpx_async_transport):
        with pytest.raises(integrations.UnsupportedClientError, match="proxy"):
            factory(cfg, proxy=proxy.url)


# --- aiohttp


@pytest.mark.parametrize("cfg", CONFIGS)
def test_aiohttp_connector(origin: realservers.Http, cfg: KeepaliveConfig) -> None:
    import aiohttp

    no_client_sockets(origin.port)

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=30)  # a hang fails the test, not the whole run
        async with aiohttp.ClientSession(connector=integrations.aiohttp_connector(cfg),
                                         timeout=timeout) as s:
            async with s.get(origin.url + "aio") as resp:
                assert await resp.text() == "origin /aio"
            assert_carries(origin.port, cfg)

    run(main())
    no_client_sockets(origin.port)


def test_aiohttp_version_gate() -> None:
    with pytest.raises(integrations.UnsupportedClientError, match=r"aiohttp>=3\.12") as err:
        integrations._require_version("aiohttp", "3.11.18", (3, 12), "socket_factory")
    assert "3.11.18" in str(err.value)
    for ok in ("3.12.0", "3.12.0rc1", "3.13.2", "4.0.0a1"):
        integrations._require_version("aiohttp", ok, (3, 12), "socket_factory")
    with pytest.raises(integrations.UnsupportedClientError):
        integrations._require_version("aiohttp", "3.9.5", (3, 12), "socket_factory")


# --- redis-py


@pytest.mark.parametrize("cfg", CONFIGS)
def test_redis_sync(redis_srv: realservers.Redis, cfg: KeepaliveConfig) -> None:
    import redis

    no_client_sockets(redis_srv.port)
    client = redis.Redis(host=redis_srv.host, port=redis_srv.port,
                         **integrations.redis_kwargs(cfg))
    try:
        assert client.ping()
        assert_carries(redis_srv.port, cfg)  # TCP_USER_TIMEOUT passed through too
    finally:
        client.close()
        client.connection_pool.disconnect()
    no_client_sockets(redis_srv.port)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_redis_asyncio(redis_srv: realservers.Redis, cfg: KeepaliveConfig) -> None:
    import redis.asyncio

    no_client_sockets(redis_srv.port)

    async def main() -> None:
        client = redis.asyncio.Redis(host=redis_srv.host, port=redis_srv.port,
                                     **integrations.redis_kwargs(cfg, asyncio=True))
        try:
            assert await client.ping()
            assert_carries(redis_srv.port, cfg)
        finally:
            await client.aclose()

    run(main())
    no_client_sockets(redis_srv.port)


def test_redis_kwargs_shape() -> None:
    cfg = KeepaliveConfig(5, 2, 3, 11000)
    kw = integrations.redis_kwargs(cfg, retries=None)
    assert kw == {"socket_keepalive": True, "socket_keepalive_options": {
        socket.TCP_KEEPIDLE: 5, socket.TCP_KEEPINTVL: 2, socket.TCP_KEEPCNT: 3,
        socket.TCP_USER_TIMEOUT: 11000}, "socket_connect_timeout": 22.0}
    assert cfg.worst_case_detection == 22.0  # the budget bounds the connect too
    # Without a user timeout the idle detection time is the budget.
    assert integrations.redis_kwargs(KeepaliveConfig(5, 2, 3), retries=None)[
        "socket_connect_timeout"] == 11.0
    import redis.asyncio.retry
    import redis.retry

    retry = integrations.redis_kwargs(cfg)["retry"]
    assert isinstance(retry, redis.retry.Retry) and retry.get_retries() == 0
    retry = integrations.redis_kwargs(cfg, retries=2, asyncio=True)["retry"]
    assert isinstance(retry, redis.asyncio.retry.Retry) and retry.get_retries() == 2
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="retries"):
            integrations.redis_kwargs(cfg, retries=bad)  # type: ignore[arg-type]  # on purpose


# --- libpq: psycopg 3, psycopg2, SQLAlchemy


def test_libpq_kwargs_and_dsn_shape() -> None:
    cfg = KeepaliveConfig(9, 2, 4, 16000)
    assert integrations.libpq_kwargs(cfg) == {
        "keepalives": 1, "keepalives_idle": 9, "keepalives_interval": 2,
        "keepalives_count": 4, "connect_timeout": 33, "tcp_user_timeout": 16000}
    assert cfg.worst_case_detection == 33.0  # the connect timeout is the budget
    assert integrations.libpq_dsn(cfg) == (
        "keepalives=1 keepalives_idle=9 keepalives_interval=2 keepalives_count=4 "
        "connect_timeout=33 tcp_user_timeout=16000")
    # libpq's smallest connect_timeout is 2 s; whole seconds, rounded up
    assert integrations.libpq_kwargs(KeepaliveConfig(1, 1, 1))["connect_timeout"] == 2
    assert integrations.libpq_kwargs(KeepaliveConfig(1, 1, 1, 1500))["connect_timeout"] == 4
    assert "tcp_user_timeout" not in integrations.libpq_dsn(KeepaliveConfig(9, 2, 4))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_psycopg3_kwargs_and_dsn(pg: realservers.Postgres, cfg: KeepaliveConfig) -> None:
    import psycopg

    no_client_sockets(pg.port)
    kwargs = integrations.libpq_kwargs(cfg)
    # A TypedDict: mypy --strict checks this call as the user's code would be checked.
    with psycopg.connect(pg.dsn, **kwargs) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert_carries(pg.port, cfg)
    no_client_sockets(pg.port)
    with psycopg.connect(f"{pg.dsn} {integrations.libpq_dsn(cfg)}") as conn:
        conn.execute("select 1")
        assert_carries(pg.port, cfg)
    no_client_sockets(pg.port)


def test_psycopg3_async(pg: realservers.Postgres) -> None:
    import psycopg

    cfg = KeepaliveConfig(27, 3, 2, 7000)
    no_client_sockets(pg.port)

    async def main() -> None:
        kwargs = integrations.libpq_kwargs(cfg)
        conn = await psycopg.AsyncConnection.connect(pg.dsn, **kwargs)
        async with conn:
            await conn.execute("select 1")
            assert_carries(pg.port, cfg)

    run(main())
    no_client_sockets(pg.port)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_psycopg2(pg: realservers.Postgres, cfg: KeepaliveConfig) -> None:
    import psycopg2

    no_client_sockets(pg.port)
    kwargs = integrations.libpq_kwargs(cfg)
    conn = psycopg2.connect(pg.dsn, **kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1")
        assert_carries(pg.port, cfg)
    finally:
        conn.close()
    conn = psycopg2.connect(f"{pg.dsn} {integrations.libpq_dsn(cfg)}")
    try:
        assert_carries(pg.port, cfg)
    finally:
        conn.close()
    no_client_sockets(pg.port)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy_connect_args(pg: realservers.Postgres, driver: str) -> None:
    import sqlalchemy

    cfg = KeepaliveConfig(31, 2, 6, 12000)
    no_client_sockets(pg.port)
    url = pg.url.replace("postgresql://", f"postgresql+{driver}://")
    engine = sqlalchemy.create_engine(url, connect_args=integrations.libpq_kwargs(cfg))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
            assert_carries(pg.port, cfg)
    finally:
        engine.dispose()
    no_client_sockets(pg.port)


# --- asyncpg


@pytest.mark.parametrize("cfg", CONFIGS)
def test_asyncpg_connection_class(pg: realservers.Postgres, cfg: KeepaliveConfig) -> None:
    import asyncpg

    no_client_sockets(pg.port)

    async def main() -> None:
        conn = await asyncpg.connect(host=pg.host, port=pg.port, user=pg.user,
                                     database=pg.dbname, ssl=False,
                                     connection_class=integrations.asyncpg_connection_class(cfg))
        try:
            assert await conn.fetchval("select 1") == 1
            assert_carries(pg.port, cfg)
        finally:
            await conn.close()

    run(main())
    no_client_sockets(pg.port)


def test_asyncpg_pool_and_subclass(pg: realservers.Postgres) -> None:
    import asyncpg

    cfg = KeepaliveConfig(29, 4, 2)

    class Mine(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no types: Any
        tag = "mine"

    cls = integrations.asyncpg_connection_class(cfg, base=Mine)
    assert issubclass(cls, Mine)
    no_client_sockets(pg.port)

    async def main() -> None:
        pool = await asyncpg.create_pool(host=pg.host, port=pg.port, user=pg.user,
                                         database=pg.dbname, ssl=False, min_size=2,
                                         max_size=2, connection_class=cls)
        try:
            async with pool.acquire() as conn:
                assert conn.tag == "mine"
            assert_carries(pg.port, cfg, at_least=2)
        finally:
            await pool.close()

    run(main())
    no_client_sockets(pg.port)
    with pytest.raises(TypeError, match=r"asyncpg\.Connection"):
        integrations.asyncpg_connection_class(cfg, base=dict)


def test_asyncpg_without_private_transport_fails_loudly(pg: realservers.Postgres) -> None:
    """The undocumented path moving (simulated by a base class that hides _transport) makes
    connect fail naming the cause, instead of a connection without keepalive."""
    import asyncpg

    stash: list[asyncio.BaseTransport] = []

    class Moved(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no types: Any
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            stash.append(self._transport)
            del self._transport

    cls = integrations.asyncpg_connection_class(KeepaliveConfig(5, 1, 1), base=Moved)

    async def main() -> None:
        with pytest.raises(integrations.UnsupportedClientError, match="NOT applied"):
            await asyncpg.connect(host=pg.host, port=pg.port, user=pg.user,
                                  database=pg.dbname, ssl=False, connection_class=cls)
        for transport in stash:
            transport.close()

    run(main())
    no_client_sockets(pg.port)


def test_asyncpg_server_settings_tune_only_the_server_side(pg: realservers.Postgres) -> None:
    """Why server_settings is no answer for the client: the client socket stays untouched."""
    import asyncpg

    no_client_sockets(pg.port)

    async def main() -> None:
        conn = await asyncpg.connect(host=pg.host, port=pg.port, user=pg.user,
                                     database=pg.dbname, ssl=False,
                                     server_settings={"tcp_keepalives_idle": "17"})
        try:
            assert await conn.fetchval("show tcp_keepalives_idle") == "17"
            assert_no_keepalive(pg.port)
        finally:
            await conn.close()

    run(main())


# --- grpcio


def _grpc_server(options: list[tuple[str, int]]) -> tuple[grpc.Server, int]:
    from concurrent import futures

    import grpc

    echo: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        lambda request, context: request)
    handler = grpc.method_handlers_generic_handler("pysockopt.Test", {"Echo": echo})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@contextlib.contextmanager
def _grpc_pair(cfg: KeepaliveConfig, server_options: list[tuple[str, int]]) -> Iterator[
        tuple[grpc.Channel, int, list[grpc.ChannelConnectivity]]]:
    import grpc

    server, port = _grpc_server(server_options)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                    options=integrations.grpc_channel_options(cfg))
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append, try_to_connect=True)
    echo: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/pysockopt.Test/Echo")
    try:
        assert echo(b"ping", timeout=10) == b"ping"
        yield channel, port, states
    finally:
        channel.close()
        server.stop(None)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_grpc_channel_sets_user_timeout_not_keepalive(cfg: KeepaliveConfig) -> None:
    opts = dict(integrations.grpc_channel_options(cfg))
    assert opts["grpc.keepalive_time_ms"] == cfg.idle * 1000
    assert opts["grpc.keepalive_timeout_ms"] <= cfg.interval * cfg.probes * 1000
    assert opts["grpc.keepalive_time_ms"] + opts["grpc.keepalive_timeout_ms"] <= (
        cfg.detection_time * 1000)
    with _grpc_pair(cfg, integrations.grpc_server_options(cfg)) as (_, port, _states):
        found = client_sockets(port)
        assert len(found) == 1
        ka = pysockopt.read_keepalive(found[0][0])
        # gRPC's own TCP_USER_TIMEOUT, from keepalive_timeout_ms; no SO_KEEPALIVE.
        assert ka.user_timeout_ms == opts["grpc.keepalive_timeout_ms"]
        assert not ka.enabled
        assert found[0][1].timer != Timer.KEEPALIVE


def _idle_segments(cfg: KeepaliveConfig, server_options: list[tuple[str, int]],
                   seconds: float) -> tuple[int, list[grpc.ChannelConnectivity]]:
    import grpc

    with _grpc_pair(cfg, server_options) as (_, port, states):
        (fd, _conn), = client_sockets(port)
        before = pysockopt.tcp_info(fd).segs_out
        assert before is not None, "tcpi_segs_out needs Linux 4.2+"
        mark = len(states)
        time.sleep(seconds)  # no RPC: only HTTP/2 pings (and their acks) cross the wire
        after = pysockopt.tcp_info(fd).segs_out if client_sockets(port) else before
        assert after is not None
        assert states[mark - 1] == grpc.ChannelConnectivity.READY
        return after - before, states[mark:]


@pytest.mark.slow
def test_grpc_pings_flow_and_server_options_prevent_goaway() -> None:
    import grpc

    cfg = KeepaliveConfig(1, 1, 2)
    sent, changes = _idle_segments(cfg, integrations.grpc_server_options(cfg), 5.5)
    assert changes == [], f"channel left READY: {changes}"
    assert sent >= 3, f"only {sent} segments in 5.5 s idle: pings did not flow"
    # The control: a default server takes 1 s pings as abuse (GOAWAY too_many_pings).
    _, changes = _idle_segments(cfg, [], 5.5)
    assert grpc.ChannelConnectivity.IDLE in changes or (
        grpc.ChannelConnectivity.TRANSIENT_FAILURE in changes)


def test_grpc_server_options_shape() -> None:
    cfg = KeepaliveConfig(10, 2, 3)
    assert dict(integrations.grpc_server_options(cfg)) == {
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.min_ping_interval_without_data_ms": 5000,
        "grpc.http2.max_ping_strikes": 2}
    # With a 4 s user timeout the kernel gives up at the first probe (10 + 2 = 12 s): the
    # ping's ack is waited for as long, and never longer than the user timeout.
    cfg = KeepaliveConfig(10, 2, 3, 4000)
    client = dict(integrations.grpc_channel_options(cfg))
    assert cfg.detection_time == 12 and client["grpc.keepalive_timeout_ms"] == 2000
    client = dict(integrations.grpc_channel_options(KeepaliveConfig(10, 2, 3, 1500)))
    assert client["grpc.keepalive_timeout_ms"] == 1500  # the tighter user timeout kept


# --- plain asyncio


@pytest.mark.parametrize("cfg", CONFIGS)
def test_asyncio_stream_writer_and_transport(
    origin: realservers.Http, cfg: KeepaliveConfig
) -> None:
    no_client_sockets(origin.port)

    async def main() -> None:
        _, writer = await asyncio.open_connection(origin.host, origin.port)
        report = integrations.asyncio_apply(writer, cfg)
        assert report.ok
        assert_carries(origin.port, cfg)
        writer.close()
        await writer.wait_closed()

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, origin.host, origin.port)
        assert integrations.asyncio_apply(transport, cfg, verify=False).effective is None
        assert_carries(origin.port, cfg)
        transport.close()

    run(main())


def test_asyncio_apply_refuses_what_has_no_tcp_socket(tmp_path: Path) -> None:
    async def main() -> None:
        path = str(tmp_path / "s")
        server = await asyncio.start_unix_server(lambda r, w: w.close(), path)
        _, writer = await asyncio.open_unix_connection(path)
        with pytest.raises(TypeError, match="no TCP socket"):
            integrations.asyncio_apply(writer, KeepaliveConfig(5, 1, 1))
        writer.close()
        server.close()
        await server.wait_closed()

    run(main())
    with pytest.raises(TypeError, match="transport or StreamWriter"):
        integrations.asyncio_apply(object(), KeepaliveConfig(5, 1, 1))


# --- docs/integrations.md: every snippet runs against the servers started here


def doc_snippets() -> list[tuple[str, str]]:
    """(section title, code) for every ```python block of docs/integrations.md."""
    section = ""
    out = []
    for match in re.finditer(r"^## ([^\n]+)$|^```python\n(.*?)^```", DOC.read_text(),
                             re.M | re.S):
        if match[1]:
            section = match[1].strip()
        else:
            out.append((section, match[2]))
    return out


def test_docs_have_a_snippet_per_client() -> None:
    sections = {title for title, _ in doc_snippets()}
    for client in ("urllib3", "requests", "httpx", "aiohttp", "redis", "psycopg", "asyncpg",
                   "gRPC", "asyncio", "SQLAlchemy"):
        assert any(client in title for title in sections), client


@pytest.mark.slow
def test_docs_snippets_run(
    origin: realservers.Http, proxy: realservers.Http, redis_srv: realservers.Redis,
    pg: realservers.Postgres,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "DEMO_HTTP_URL": origin.url, "DEMO_PROXY_URL": proxy.url,
           "DEMO_REDIS_PORT": str(redis_srv.port), "DEMO_PG_DSN": pg.dsn,
           "DEMO_PG_URL": pg.url}
    snippets = doc_snippets()
    assert len(snippets) >= 10
    failures = []
    for title, code in snippets:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode:
            failures.append(f"--- {title}\n{code}\n{proc.stderr[-2000:]}")
    assert not failures, "\n".join(failures)
