"""One KeepaliveConfig, turned into each client library's own settings.

Every function here takes a :class:`~pysockopt.KeepaliveConfig` and returns what one client
library accepts: socket options for urllib3 and httpx, an adapter for requests, a connector
for aiohttp, keyword arguments for redis-py and libpq (psycopg 3, psycopg2, SQLAlchemy),
a connection class for asyncpg, channel and server options for grpcio, and a one-call
apply for plain asyncio streams. No client library is imported until the function for it
is called, so importing this module costs nothing and needs none of them.

Where a client would ignore the settings, the function raises :class:`UnsupportedClientError`
instead of returning something that looks right: aiohttp before 3.12, httpx through a proxy
(httpcore drops socket options on proxied connections), an asyncpg whose private transport
attribute moved (asyncpg has no public hook; :func:`asyncpg_connection_class`).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypedDict

from .errors import UnsupportedClientError
from .keepalive import KeepaliveConfig, KeepaliveReport, apply_keepalive

if TYPE_CHECKING:
    import aiohttp
    import httpx
    import requests.adapters

__all__ = [
    "UnsupportedClientError",
    "urllib3_socket_options",
    "requests_adapter",
    "requests_session",
    "httpx_transport",
    "httpx_async_transport",
    "aiohttp_socket_factory",
    "aiohttp_connector",
    "redis_kwargs",
    "LibpqKeepalive",
    "libpq_kwargs",
    "libpq_dsn",
    "asyncpg_connection_class",
    "grpc_channel_options",
    "grpc_server_options",
    "asyncio_apply",
]

#: Socket option triples as urllib3, httpx and socket.setsockopt take them.
SocketOptions = list[tuple[int, int, int | bytes]]

#: urllib3's own HTTPConnection.default_socket_options, used when urllib3 is not installed.
_URLLIB3_DEFAULTS: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

#: The first aiohttp release with TCPConnector(socket_factory=...).
_AIOHTTP_SOCKET_FACTORY: Final = (3, 12)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if digits != part:  # "12rc1", "0.dev3": the rest is a pre-release tag
            break
    return tuple(parts)


def _require_version(
    library: str, version: str, minimum: tuple[int, ...], feature: str
) -> None:
    """Raise UnsupportedClientError unless ``version`` of ``library`` is at least ``minimum``."""
    if _version_tuple(version) < minimum:
        needed = ".".join(map(str, minimum))
        raise UnsupportedClientError(
            f"{library} {version} has no supported way to set socket options ({feature} "
            f"exists from {library} {needed}); upgrade to {library}>={needed}"
        )


def _check_config(config: object) -> KeepaliveConfig:
    if not isinstance(config, KeepaliveConfig):
        raise TypeError(f"config must be a KeepaliveConfig, not {type(config).__name__}")
    return config


# --- urllib3 / requests


def urllib3_socket_options(config: KeepaliveConfig, *, proxy: bool = False) -> SocketOptions:
    """Return urllib3's ``socket_options`` for ``config``, urllib3's defaults included.

    Passing ``socket_options`` replaces urllib3's ``HTTPConnection.default_socket_options``
    (TCP_NODELAY), so they are kept first, read from the installed urllib3 (its known value
    when urllib3 is not installed), followed by ``config.socket_options()``. Use it as
    ``urllib3.PoolManager(socket_options=...)`` or ``HTTPConnectionPool(...)``.

    ``proxy=True`` gives the list for a connection to an HTTP(S) proxy, where urllib3 leaves
    Nagle's algorithm on and uses no defaults: only the keepalive options. Pass it to
    ``urllib3.ProxyManager(url, socket_options=...)``. urllib3 never applies a changed
    ``HTTPConnection.default_socket_options`` to proxy connections; explicit
    ``socket_options`` are the way that works for both.

    Retries: urllib3 sets these options before it connects, so TCP_USER_TIMEOUT also ends a
    connect's SYN retries to a vanished server at the user timeout. The call raises within
    ``config.worst_case_detection`` with ``retries=Retry(0)`` (or False); each retry allowed
    (PoolManager's default is ``Retry(3)``: measured 6-8.5 s for a 5 s budget) adds up to
    ``user_timeout_ms / 1000`` s for its connect, plus its back-off.
    """
    ka = _check_config(config).socket_options()
    if proxy:
        return list(ka)
    try:
        from urllib3.connection import HTTPConnection
    except ImportError:
        defaults: SocketOptions = list(_URLLIB3_DEFAULTS)
    else:
        defaults = list(HTTPConnection.default_socket_options)
    ours = {(level, name) for level, name, _ in ka}
    kept = [opt for opt in defaults if (opt[0], opt[1]) not in ours]
    return kept + list(ka)


def requests_adapter(
    config: KeepaliveConfig, **adapter_kwargs: Any
) -> requests.adapters.HTTPAdapter:
    """Return a requests ``HTTPAdapter`` whose every connection carries ``config``.

    Mount it on a session (``session.mount("https://", adapter)``) or use
    :func:`requests_session`. ``adapter_kwargs`` go to ``HTTPAdapter`` (pool_connections,
    pool_maxsize, max_retries, pool_block). Both of requests' pool managers get the options:
    ``init_poolmanager`` (direct connections) and ``proxy_manager_for`` (connections through
    an HTTP proxy, or a SOCKS proxy when PySocks is installed). An adapter that overrides only
    ``init_poolmanager``, the usual recipe, leaves proxied connections without keepalive.

    requests' own default, ``max_retries=0``, keeps the budget: a dead server raises
    ``ReadTimeout`` / ``ConnectionError`` within ``config.worst_case_detection``, HTTPS
    included; ``max_retries=N`` adds up to N connects of one user timeout each (see
    :func:`urllib3_socket_options`).
    """
    cls = _adapter_class()
    return cls(_check_config(config), **adapter_kwargs)


_ADAPTER: list[Callable[..., requests.adapters.HTTPAdapter]] = []


def _adapter_class() -> Callable[..., requests.adapters.HTTPAdapter]:
    if _ADAPTER:
        return _ADAPTER[0]
    from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter

    class KeepaliveHTTPAdapter(HTTPAdapter):  # type: ignore[misc, unused-ignore]
        """A requests HTTPAdapter that sets one KeepaliveConfig on every connection."""

        # What requests' __getstate__ pickles; requests declares it as a plain list.
        __attrs__ = [  # noqa: RUF012 - redeclares requests' own attribute, same type
            *HTTPAdapter.__attrs__, "_pso_config", "_pso_options", "_pso_proxy_options"]

        def __reduce__(self) -> tuple[Any, ...]:
            # The class is made on first use: pickle by the public factory, then the state
            # requests keeps (pool sizes, retries) restores the rest.
            return (requests_adapter, (self._pso_config,), self.__getstate__())

        def __init__(self, config: KeepaliveConfig, **kwargs: Any) -> None:
            # HTTPAdapter.__init__ calls init_poolmanager: the options must exist first.
            self._pso_config = config
            self._pso_options = urllib3_socket_options(config)
            self._pso_proxy_options = urllib3_socket_options(config, proxy=True)
            super().__init__(**kwargs)

        def init_poolmanager(
            self,
            connections: int,
            maxsize: int,
            block: bool = DEFAULT_POOLBLOCK,
            **pool_kwargs: Any,
        ) -> None:
            pool_kwargs.setdefault("socket_options", self._pso_options)
            super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            # A SOCKS proxy's pool is a plain (non-proxy) pool to urllib3, with the
            # TCP_NODELAY default; an HTTP(S) proxy's has none.
            socks = proxy.lower().startswith("socks")
            options = self._pso_options if socks else self._pso_proxy_options
            proxy_kwargs.setdefault("socket_options", options)
            return super().proxy_manager_for(proxy, **proxy_kwargs)

    KeepaliveHTTPAdapter.__module__ = __name__
    _ADAPTER.append(KeepaliveHTTPAdapter)
    return KeepaliveHTTPAdapter


def requests_session(config: KeepaliveConfig, **adapter_kwargs: Any) -> requests.Session:
    """Return a ``requests.Session`` with :func:`requests_adapter` mounted for http and https."""
    import requests

    session = requests.Session()
    adapter = requests_adapter(config, **adapter_kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- httpx


def httpx_transport(config: KeepaliveConfig, **transport_kwargs: Any) -> httpx.HTTPTransport:
    """Return an ``httpx.HTTPTransport(socket_options=...)`` carrying ``config``.

    Use it as ``httpx.Client(transport=...)``. ``transport_kwargs`` go to the transport
    (verify, http2, limits, retries, local_address...). httpcore sets TCP_NODELAY itself, so
    only the keepalive options are passed.

    Connect timeout: httpcore sets the socket options only after the connection is made, so
    TCP_USER_TIMEOUT does not end the SYN retries to a vanished server (measured: a client
    with ``timeout=None`` still blocked 40 s after an nft drop). A request whose connect
    timeout is None (``httpx.Client(timeout=None)``, ``httpx.Timeout(None)``) gets the
    config's budget, ``worst_case_detection`` s, as its connect timeout here; a connect
    timeout you set is kept. The transport's own ``retries=`` (connect retries, 0 by default)
    each add up to that connect timeout.

    Proxies: httpcore (1.0) creates the connections of its ``HTTPProxy`` without the socket
    options it was given, so a ``proxy=`` here raises UnsupportedClientError rather than
    build a transport whose proxy connection has no keepalive. A ``proxy=`` given to
    ``httpx.Client`` mounts a transport of httpx's own, also without these options; and with
    an explicit transport httpx ignores the HTTP(S)_PROXY environment variables.
    """
    return _httpx_transport_class(False)(config, **transport_kwargs)  # type: ignore[no-any-return]


def httpx_async_transport(
    config: KeepaliveConfig, **transport_kwargs: Any
) -> httpx.AsyncHTTPTransport:
    """Return an ``httpx.AsyncHTTPTransport(socket_options=...)``; as :func:`httpx_transport`."""
    return _httpx_transport_class(True)(config, **transport_kwargs)  # type: ignore[no-any-return]


_HTTPX: dict[bool, type[Any]] = {}


def _connect_timeout_default(request: Any, seconds: float) -> None:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict) and timeout.get("connect") is None:
        request.extensions = {**request.extensions, "timeout": {**timeout, "connect": seconds}}


def _httpx_transport_class(is_async: bool) -> type[Any]:
    if is_async in _HTTPX:
        return _HTTPX[is_async]
    import httpx

    class KeepaliveHTTPTransport(httpx.HTTPTransport):
        """An httpx HTTPTransport with keepalive on every connection and a bounded connect."""

        def __init__(self, config: KeepaliveConfig, **kwargs: Any) -> None:
            _refuse_httpx_proxy(kwargs)
            cfg = _check_config(config)
            self._pso_connect = _connect_timeout(cfg)
            super().__init__(socket_options=cfg.socket_options(), **kwargs)

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            _connect_timeout_default(request, self._pso_connect)
            return super().handle_request(request)

    class KeepaliveAsyncHTTPTransport(httpx.AsyncHTTPTransport):
        """An httpx AsyncHTTPTransport with keepalive on every connection, bounded connect."""

        def __init__(self, config: KeepaliveConfig, **kwargs: Any) -> None:
            _refuse_httpx_proxy(kwargs)
            cfg = _check_config(config)
            self._pso_connect = _connect_timeout(cfg)
            super().__init__(socket_options=cfg.socket_options(), **kwargs)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            _connect_timeout_default(request, self._pso_connect)
            return await super().handle_async_request(request)

    for cls in (KeepaliveHTTPTransport, KeepaliveAsyncHTTPTransport):
        cls.__module__ = __name__
    _HTTPX[False], _HTTPX[True] = KeepaliveHTTPTransport, KeepaliveAsyncHTTPTransport
    return _HTTPX[is_async]


def _refuse_httpx_proxy(kwargs: dict[str, Any]) -> None:
    if kwargs.get("proxy") is not None:
        raise UnsupportedClientError(
            "httpx through a proxy: httpcore's HTTPProxy opens its connections without the "
            "socket_options it was given, so keepalive would not reach the proxy connection"
        )


# --- aiohttp

#: What aiohttp passes to a socket factory: a getaddrinfo() entry.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


def aiohttp_socket_factory(config: KeepaliveConfig) -> Callable[[AddrInfo], socket.socket]:
    """Return a ``socket_factory`` for ``aiohttp.TCPConnector`` (aiohttp >= 3.12).

    The factory makes the socket aiohttp asked for and applies ``config`` before aiohttp
    connects it, in one native call. It does not check aiohttp's version; use
    :func:`aiohttp_connector` for that.
    """
    cfg = _check_config(config)

    def socket_factory(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, type_, proto)
        try:
            apply_keepalive(sock, cfg, verify=False)
        except BaseException:
            sock.close()
            raise
        return sock

    return socket_factory


def aiohttp_connector(config: KeepaliveConfig, **connector_kwargs: Any) -> aiohttp.TCPConnector:
    """Return ``aiohttp.TCPConnector(socket_factory=...)`` carrying ``config``.

    Call it inside a running event loop, as aiohttp requires. ``connector_kwargs`` go to the
    connector (limit, ssl, ttl_dns_cache...). aiohttp before 3.12 has no supported hook for
    socket options (``TCPConnector`` has no ``socket_factory`` and no ``tcp_sockopts``):
    UnsupportedClientError, naming the version needed, instead of a connector without keepalive.

    Retry: aiohttp retries an idempotent request once on a new connection when a pooled one
    fails, with no public switch. That connect to a dead server ends at the user timeout
    (the options are set before connecting), so a call can raise up to
    ``config.worst_case_detection + user_timeout_ms / 1000`` s after the server vanished;
    ``aiohttp.ClientTimeout(sock_connect=S)`` makes that ``worst_case_detection + S``.
    """
    import aiohttp

    cfg = _check_config(config)
    _require_version("aiohttp", aiohttp.__version__, _AIOHTTP_SOCKET_FACTORY,
                     "TCPConnector(socket_factory=...)")
    return aiohttp.TCPConnector(socket_factory=aiohttp_socket_factory(cfg), **connector_kwargs)


# --- redis-py


def _connect_timeout(config: KeepaliveConfig) -> float:
    """Return the config's budget as a connect timeout (worst_case_detection or detection)."""
    worst = config.worst_case_detection
    return float(config.detection_time if worst is None else worst)


def redis_kwargs(
    config: KeepaliveConfig, *, retries: int | None = 0, asyncio: bool = False
) -> dict[str, Any]:
    """Return redis-py keyword arguments that find a dead server within ``config``'s budget.

    ``socket_keepalive=True, socket_keepalive_options={option: value}`` (redis-py sets every
    entry at the IPPROTO_TCP level, so TCP_USER_TIMEOUT goes through too; the options
    replace redis-py's own defaults, 30 s idle, 5 s interval, 3 probes in redis-py 8),
    ``socket_connect_timeout`` (the budget, ``worst_case_detection``: redis-py sets the
    options before connecting, so TCP_USER_TIMEOUT already ends the SYN retries to a vanished
    server at the user timeout; this bounds a config without one), and ``retry``.

    Retries multiply the budget. redis-py 8 retries a failed command 3 times by default,
    reconnecting each time, and retries each reconnect 3 times again: up to 16 connect
    attempts after the dead peer was found. Measured with ``for_detection(5)`` and the link
    cut (docs/integrations.md): a blocked BLPOP raised 33 s after the cut with redis-py's
    default retries, 1.6 s with ``retries=0``. So ``retries=0`` (the default here) gives
    ``retry=Retry(NoBackoff(), 0)``: the command raises ConnectionError when keepalive finds
    the server dead, and your code decides. ``retries=N`` allows N retries without back-off;
    each costs up to ``N + 1`` connect attempts of at most ``socket_connect_timeout`` (the user
    timeout, in practice) each on a dead server: the budget grows by up to
    ``N * (N + 1) * user_timeout``. ``retries=None`` leaves redis-py's own ``retry`` (no
    ``retry`` key). ``asyncio=True`` builds ``redis.asyncio``'s Retry class for
    ``redis.asyncio.Redis`` (the sync one is converted there with a warning).

    For ``redis.Redis(**kwargs)``, ``redis.asyncio.Redis``, ``ConnectionPool`` and
    ``from_url(url, **kwargs)``. To pass your own ``retry`` or ``socket_connect_timeout``
    as well, use ``retries=None`` or merge (``Redis(**{**redis_kwargs(cfg), "retry": r})``):
    giving a keyword twice is a TypeError.
    """
    cfg = _check_config(config)
    options: dict[int, int | bytes] = {}
    for level, name, value in cfg.socket_options():
        if level == socket.SOL_SOCKET:
            continue  # SO_KEEPALIVE: redis-py sets it from socket_keepalive=True
        if level != socket.IPPROTO_TCP:  # pragma: no cover - every keepalive knob is TCP's
            raise ValueError(f"redis-py sets options at IPPROTO_TCP only, not level {level}")
        options[name] = value
    kwargs: dict[str, Any] = {"socket_keepalive": True, "socket_keepalive_options": options,
                              "socket_connect_timeout": _connect_timeout(cfg)}
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0 or None, not {retries!r}")
        from redis.backoff import NoBackoff

        if asyncio:
            from redis.asyncio.retry import Retry as AsyncRetry

            kwargs["retry"] = AsyncRetry(NoBackoff(), retries)
        else:
            from redis.retry import Retry

            kwargs["retry"] = Retry(NoBackoff(), retries)
    return kwargs


# --- libpq: psycopg 3, psycopg2, SQLAlchemy


class _LibpqKeepaliveRequired(TypedDict):
    keepalives: int
    keepalives_idle: int
    keepalives_interval: int
    keepalives_count: int
    connect_timeout: int


class LibpqKeepalive(_LibpqKeepaliveRequired, total=False):
    """libpq's keepalive connection parameters, as :func:`libpq_kwargs` returns them.

    A TypedDict, so ``psycopg.connect(**libpq_kwargs(cfg))`` and ``psycopg2.connect(...)``
    type-check under ``mypy --strict`` (a ``dict[str, int]`` would be matched against every
    keyword parameter of ``connect``). ``tcp_user_timeout`` is present when the config sets a
    user timeout.
    """

    tcp_user_timeout: int


def libpq_kwargs(config: KeepaliveConfig) -> LibpqKeepalive:
    """Return libpq's keepalive connection parameters as keyword arguments.

    ``keepalives=1, keepalives_idle, keepalives_interval, keepalives_count``, when
    ``config.user_timeout_ms`` is set ``tcp_user_timeout`` (milliseconds; libpq 12+), and
    ``connect_timeout``: the budget (``worst_case_detection``) in whole seconds, at least 2
    (libpq's minimum). libpq sets the options before it connects, so TCP_USER_TIMEOUT already
    ends the SYN retries to a vanished server at the user timeout; ``connect_timeout`` bounds
    a config without one, and libpq's wait for the server's startup answer.

    libpq itself never reconnects: a dead server found by keepalive raises
    ``OperationalError`` (psycopg, psycopg2; SQLAlchemy wraps it) in the call. What
    reconnects is the pool: SQLAlchemy's ``pool_pre_ping=True`` pings a pooled connection
    before handing it out; on a dead server that ping waits for the user timeout, then one
    new connection is tried (at most ``connect_timeout``, in practice the user timeout): up
    to ``user_timeout + connect_timeout`` before the checkout raises. psycopg_pool's
    ``check`` does the same per connection.

    For ``psycopg.connect(**kwargs)``, ``psycopg2.connect(**kwargs)``, psycopg_pool's
    ``kwargs=`` and SQLAlchemy's ``create_engine(url, connect_args=...)``.
    """
    cfg = _check_config(config)
    kwargs: LibpqKeepalive = {
        "keepalives": 1,
        "keepalives_idle": cfg.idle,
        "keepalives_interval": cfg.interval,
        "keepalives_count": cfg.count,
        "connect_timeout": max(2, math.ceil(_connect_timeout(cfg))),
    }
    if cfg.user_timeout_ms is not None:
        kwargs["tcp_user_timeout"] = cfg.user_timeout_ms
    return kwargs


def libpq_dsn(config: KeepaliveConfig) -> str:
    """Return the same parameters as :func:`libpq_kwargs` as a libpq DSN fragment.

    ``"keepalives=1 keepalives_idle=... keepalives_interval=... keepalives_count=...
    connect_timeout=... tcp_user_timeout=..."``: append it to a key=value connection string
    (after a space).
    """
    return " ".join(f"{key}={value}" for key, value in libpq_kwargs(config).items())


# --- asyncpg


def asyncpg_connection_class(config: KeepaliveConfig, base: type[Any] | None = None) -> type[Any]:
    """Return an ``asyncpg.Connection`` subclass that applies ``config`` to its socket.

    Pass it as ``asyncpg.connect(..., connection_class=...)`` or ``create_pool(...,
    connection_class=...)``. ``base``: your own Connection subclass to extend.

    UNDOCUMENTED PATH: asyncpg (0.32) has no public socket hook. Its ``server_settings``
    ``tcp_keepalives_*`` configure the *server's* side of the connection, not the client's.
    This class reads the connection's transport from asyncpg's private ``_transport``
    attribute (asyncpg 0.30 to 0.32) and applies ``config`` to
    ``transport.get_extra_info("socket")`` at construction, with read-back. If a future
    asyncpg moves that attribute, connecting raises UnsupportedClientError saying so, rather than
    leaving the connection without keepalive.

    The options are applied after asyncpg has connected, so they cannot bound the connect:
    pass ``timeout=config.worst_case_detection`` to ``connect`` / ``create_pool`` (asyncpg's
    default is 60 s). A dead server found later raises ConnectionDoesNotExistError (caused by
    ETIMEDOUT) in the call; asyncpg does not retry it.
    """
    import asyncpg

    cfg = _check_config(config)
    parent = asyncpg.Connection if base is None else base
    if not (isinstance(parent, type) and issubclass(parent, asyncpg.Connection)):
        raise TypeError(f"base must be an asyncpg.Connection subclass, not {parent!r}")

    class KeepaliveConnection(parent):  # type: ignore[misc, valid-type, unused-ignore]
        __doc__ = f"asyncpg Connection with {cfg!r} applied to its socket (undocumented path)."

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            transport = getattr(self, "_transport", None)
            get_extra_info = getattr(transport, "get_extra_info", None)
            sock = get_extra_info("socket") if callable(get_extra_info) else None
            if sock is None:
                close = getattr(transport, "close", None)
                if callable(close):  # asyncpg closes nothing when connection_class fails
                    close()
                raise UnsupportedClientError(
                    "pysockopt.integrations.asyncpg_connection_class relies on asyncpg's "
                    f"private Connection._transport, which asyncpg {asyncpg.__version__} does "
                    "not have (or it has no socket): keepalive was NOT applied"
                )
            if sock.family in (socket.AF_INET, socket.AF_INET6):  # Unix sockets: no keepalive
                apply_keepalive(sock, cfg)

    KeepaliveConnection.__module__ = __name__
    return KeepaliveConnection


# --- grpcio


#: gRPC channel arguments are C ints.
_GRPC_INT_MAX: Final = 2**31 - 1


def _grpc_times(config: KeepaliveConfig) -> tuple[int, int]:
    cfg = _check_config(config)
    time_ms = cfg.idle * 1000
    # The probing window the kernel really uses (with a user timeout it ends probing at the
    # first slot past it, whatever count says), so time + timeout == config.detection_time.
    timeout_ms = min(cfg.interval * cfg.probes * 1000, _GRPC_INT_MAX)  # 32767 * 127 s overflows
    if cfg.user_timeout_ms:  # never a looser bound on unacknowledged data than asked for
        timeout_ms = min(timeout_ms, cfg.user_timeout_ms)
    return time_ms, timeout_ms


def grpc_channel_options(config: KeepaliveConfig) -> list[tuple[str, int]]:
    """Return grpcio client channel options that find a dead server as ``config`` would.

    gRPC uses HTTP/2 pings, not TCP keepalive: it sets no SO_KEEPALIVE. A ping goes out after
    ``grpc.keepalive_time_ms`` = ``idle`` s and the connection is dropped when its ack takes
    longer than ``grpc.keepalive_timeout_ms`` = ``interval * probes`` s (the probes the kernel
    really sends, see ``KeepaliveConfig.probes``; or ``user_timeout_ms`` when that is
    smaller), so the detection time is at most ``config.detection_time``. gRPC has no
    user-timeout option: it sets TCP_USER_TIMEOUT to ``keepalive_timeout_ms`` on the socket
    itself. ``grpc.keepalive_permit_without_calls=1``
    pings an idle channel too and ``grpc.http2.max_pings_without_data=0`` keeps pinging
    without data frames. The server must allow these pings: see :func:`grpc_server_options`.
    For ``grpc.insecure_channel(target, options=...)`` and ``grpc.aio``.

    A call whose connection died fails with ``UNAVAILABLE`` and the channel reconnects in
    the background (gRPC sets its TCP_USER_TIMEOUT before connecting, so a connect to a
    vanished server ends within ``keepalive_timeout_ms`` too). A call made with
    ``wait_for_ready=True`` instead waits for that reconnect as long as its deadline: give
    such calls a deadline within the budget.
    """
    time_ms, timeout_ms = _grpc_times(config)
    return [
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def grpc_server_options(config: KeepaliveConfig) -> list[tuple[str, int]]:
    """Return grpcio server options that accept the pings of :func:`grpc_channel_options`.

    A default server takes a ping more often than every 5 minutes, or on a channel without
    calls, as abuse and after ``grpc.http2.max_ping_strikes`` (2) of them answers GOAWAY
    ``too_many_pings``. These options allow pings without calls and every
    ``idle / 2`` seconds (half the client's interval, a margin for timer jitter), and keep
    gRPC's 2 strikes for clients that ping faster. For ``grpc.server(executor, options=...)``.
    """
    time_ms, _ = _grpc_times(config)
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", max(1, time_ms // 2)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


# --- plain asyncio


def asyncio_apply(stream: Any, config: KeepaliveConfig, *, verify: bool = True) -> KeepaliveReport:
    """Apply ``config`` to an asyncio transport or StreamWriter's socket; return the report.

    ``stream`` is a transport (from ``loop.create_connection`` or a Protocol's
    ``connection_made``) or an ``asyncio.StreamWriter`` (its ``transport`` is used). The
    socket is ``get_extra_info("socket")``; TLS transports expose the underlying TCP socket
    the same way. A transport without a TCP socket raises TypeError.

    The options come after the connection is made, so they cannot bound the connect: wrap it,
    ``asyncio.wait_for(asyncio.open_connection(...), config.worst_case_detection)``.
    """
    transport = getattr(stream, "transport", stream)
    get_extra_info: Callable[[str], Any] | None = getattr(transport, "get_extra_info", None)
    if not callable(get_extra_info):
        raise TypeError(
            f"expected an asyncio transport or StreamWriter, not {type(stream).__name__}"
        )
    sock = get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM or sock.family not in (
        socket.AF_INET, socket.AF_INET6
    ):
        raise TypeError(f"{type(transport).__name__} has no TCP socket to set keepalive on")
    return apply_keepalive(sock, _check_config(config), verify=verify)
