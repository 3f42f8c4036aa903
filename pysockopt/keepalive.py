"""TCP keepalive: validated configuration, one-call apply with read-back, host defaults.

Keepalive makes the kernel notice a peer that vanished without FIN or RST: after ``idle``
seconds without traffic it sends a probe every ``interval`` seconds and drops the connection
after ``count`` unanswered ones, so a silent peer is declared dead after
``idle + interval * count`` seconds (Linux's defaults, 7200/75/9, take 2 h 11 min).
Keepalive does nothing while data is unacknowledged; ``user_timeout_ms`` (TCP_USER_TIMEOUT)
bounds that case.
"""

from __future__ import annotations

import errno
import math
import socket
import threading
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from . import _host
from ._native import ffi, lib
from ._sock import SocketLike, fileno_of, os_error
from ._validate import check_int
from .errors import InvalidConfigError, UnsupportedPlatformError

__all__ = [
    "LIMITS",
    "HostKeepalive",
    "KeepaliveConfig",
    "KeepaliveReport",
    "KeepaliveSettings",
    "apply_keepalive",
    "read_keepalive",
    "system_keepalive",
]

#: Allowed ranges per field on Linux (include/net/tcp.h MAX_TCP_KEEPIDLE etc.).
LIMITS: Final[dict[str, tuple[int, int]]] = {
    "idle": (1, 32767),
    "interval": (1, 32767),
    "count": (1, 127),
    "user_timeout_ms": (0, 2**31 - 1),
}

#: Option names in the native PSO_KA_* order, for messages and socket_options().
_OPTION_NAMES: Final = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT",
                        "SO_KEEPALIVE")

_SYSCTL: Final = "/proc/sys/net/ipv4/tcp_keepalive_"


def _check(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    unit = "milliseconds" if name == "user_timeout_ms" else "seconds"
    why = (" (Linux keepalive has one-second granularity; sub-second values would be"
           " silently truncated)") if unit == "seconds" else ""
    check_int(name, value, *LIMITS[name], unit=unit, why_not=why)


@dataclass(frozen=True, slots=True)
class KeepaliveConfig:
    """Keepalive settings to apply to a socket, validated against the platform's limits.

    ``idle``: seconds of silence before the first probe; ``interval``: seconds between probes;
    ``count``: unanswered probes before the connection is dropped; ``user_timeout_ms``:
    TCP_USER_TIMEOUT, the longest data may stay unacknowledged (None leaves it unchanged,
    0 means the system default).
    """

    idle: int
    interval: int
    count: int
    user_timeout_ms: int | None = None
    _unverified: KeepaliveReport = field(init=False, repr=False, compare=False)
    _req: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check("idle", self.idle)
        _check("interval", self.interval)
        _check("count", self.count)
        _check("user_timeout_ms", self.user_timeout_ms, optional=True)
        # apply_keepalive(verify=False) returns this shared immutable report: no allocation
        # on the hot path.
        object.__setattr__(self, "_unverified", KeepaliveReport(self, None))
        # Built once: cffi converts one pointer per call faster than four ints (measured
        # 70 ns on a 2 us call whose target leaves 0.3 us for everything above the syscalls).
        uto = self.user_timeout_ms
        req = ffi.new("struct pso_keepalive_req *",
                      (self.idle, self.interval, self.count, -1 if uto is None else uto))
        object.__setattr__(self, "_req", req)

    def __reduce__(self) -> tuple[type[KeepaliveConfig], tuple[int, int, int, int | None]]:
        # The native request buffer cannot be pickled or copied; rebuild it from the values.
        return (KeepaliveConfig, (self.idle, self.interval, self.count, self.user_timeout_ms))

    @property
    def detection_time(self) -> int:
        """Seconds until an idle connection to a silent peer is declared dead."""
        return self.idle + self.interval * self.count

    @classmethod
    def for_detection(cls, seconds: float, *, count: int = 3) -> KeepaliveConfig:
        """Return a config that declares a silent peer dead within ``seconds``.

        Half the budget (at least 1 s each) goes to ``count`` probes, ``interval`` apart; the
        rest is ``idle`` (capped at 32767 s, the probes then taking what is left). So
        ``detection_time <= seconds``. ``user_timeout_ms`` is set to ``detection_time * 1000``:
        data left unacknowledged to a vanished peer then fails the connection in the same
        budget, and the keepalive timer's own abort (which Linux bases on the user timeout once
        it is set) falls due at the last probe, as without it.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        _check("count", count)
        budget = math.floor(seconds) if math.isfinite(seconds) else -1
        high = LIMITS["idle"][1]
        max_budget = high + LIMITS["interval"][1] * count
        if budget < count + 1 or budget > max_budget:
            raise InvalidConfigError(
                "seconds",
                seconds,
                f"{count + 1}..{max_budget} for count={count}",
                "needs at least 1 s of idle plus 1 s per probe",
            )
        interval = min(max(1, budget // (2 * count)), LIMITS["interval"][1])
        idle = budget - interval * count
        if idle > high:  # a long budget: idle is capped, the probes take the rest
            idle = high
            interval = min((budget - idle) // count, LIMITS["interval"][1])
        return cls(idle, interval, count, (idle + interval * count) * 1000)

    def socket_options(self) -> list[tuple[int, int, int]]:
        """Return ``(level, option, value)`` triples, as urllib3's ``socket_options`` takes.

        SO_KEEPALIVE comes first here, as those APIs apply the list in order on a new socket.
        """
        values = (self.idle, self.interval, self.count, self.user_timeout_ms)
        triples = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        for index, value in enumerate(values):
            if value is not None:
                triples.append((lib.pso_ka_levels[index], lib.pso_ka_optnames[index], value))
        return triples


class KeepaliveSettings(NamedTuple):
    """Keepalive settings as the kernel reports them for one socket.

    A NamedTuple, like every per-call result here: it builds in a fifth of the time of a
    frozen dataclass, which shows on apply_keepalive(verify=True).
    """

    enabled: bool
    idle: int
    interval: int
    count: int  # type: ignore[assignment]  # shadows tuple.count; the kernel's name wins
    user_timeout_ms: int

    @property
    def detection_time(self) -> int | None:
        """Seconds until an idle dead peer is noticed; None while keepalive is disabled."""
        return self.idle + self.interval * self.count if self.enabled else None


class KeepaliveReport(NamedTuple):
    """What apply_keepalive asked for and, when verified, what the kernel now reports."""

    requested: KeepaliveConfig
    effective: KeepaliveSettings | None

    @property
    def verified(self) -> bool:
        """True when the settings were read back from the socket."""
        return self.effective is not None

    @property
    def differences(self) -> tuple[tuple[str, object, object], ...]:
        """``(field, requested, effective)`` for every field the kernel did not take as asked."""
        if self.effective is None:
            return ()
        return tuple(row for row in self.rows() if row[1] is not None and row[1] != row[2])

    @property
    def ok(self) -> bool:
        """True when verified and every requested value is in effect."""
        return self.verified and not self.differences

    def rows(self) -> list[tuple[str, object, object]]:
        """``(field, requested, effective)`` for every field; effective is None if unverified."""
        eff = self.effective
        req = self.requested
        return [
            ("enabled", True, eff.enabled if eff else None),
            ("idle", req.idle, eff.idle if eff else None),
            ("interval", req.interval, eff.interval if eff else None),
            ("count", req.count, eff.count if eff else None),
            ("user_timeout_ms", req.user_timeout_ms, eff.user_timeout_ms if eff else None),
        ]


def _settings(out: object) -> KeepaliveSettings:
    # Values come in PSO_KA_* order: idle, interval, count, user timeout, SO_KEEPALIVE.
    idle, interval, count, uto, enabled = _unpack(out.values, 5)  # type: ignore[attr-defined]
    return KeepaliveSettings(bool(enabled), idle, interval, count, uto)


_unpack = ffi.unpack
_buffers = threading.local()


def _out_buffer() -> object:
    # One read-back buffer per thread: ffi.new costs as much as a syscall here.
    try:
        return _buffers.out
    except AttributeError:
        _buffers.out = ffi.new("struct pso_keepalive *")
        return _buffers.out


def _failure(rc: int, fd: int, config: KeepaliveConfig | None) -> OSError:
    # Which step failed is recorded per thread in C, next to the -errno it returned.
    option = lib.pso_keepalive_failed_option()
    name = _OPTION_NAMES[option] if 0 <= option < len(_OPTION_NAMES) else "?"
    if lib.pso_keepalive_failed_while_setting():
        applied = [n for i, n in enumerate(_OPTION_NAMES[:option])
                   if not (i == lib.PSO_KA_USER_TIMEOUT and config is not None
                           and config.user_timeout_ms is None)]
        done = ", ".join(applied) if applied else "nothing"
        what = f"setting {name} on fd {fd}; already applied: {done}"
    else:
        what = f"reading {name} from fd {fd}"
    return os_error(rc, what)


_set = lib.pso_keepalive_set
_set_verify = lib.pso_keepalive_set_verify
_socket = socket.socket


def apply_keepalive(
    sock: SocketLike, config: KeepaliveConfig, *, verify: bool = True
) -> KeepaliveReport:
    """Enable keepalive on ``sock`` with ``config``, in one native call.

    Sets TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT (unless None) and then
    SO_KEEPALIVE. With ``verify`` the same call reads all of them back and the report holds
    requested and effective values. On failure the OSError (ConnectionError, OSError with
    EBADF, ENOTSOCK, ...) names the option that failed and the ones already applied; a UDP or
    Unix socket fails on the first option, before anything changed.
    """
    # This path is benchmarked against four bare sock.setsockopt calls: keep it to attribute
    # loads and one native call.
    fd = sock.fileno() if type(sock) is _socket else fileno_of(sock)
    try:
        req = config._req
    except AttributeError:
        raise TypeError(
            f"config must be a KeepaliveConfig, not {type(config).__name__}"
        ) from None
    if not verify:
        rc = _set(fd, req)
        if rc:
            raise _failure(rc, fd, config)
        return config._unverified
    out = _out_buffer()
    rc = _set_verify(fd, req, out)
    if rc:
        raise _failure(rc, fd, config)
    return KeepaliveReport(config, _settings(out))


def read_keepalive(sock: SocketLike) -> KeepaliveSettings:
    """Return the keepalive settings in force on ``sock`` (enabled flag included)."""
    fd = fileno_of(sock)
    out = _out_buffer()
    rc = lib.pso_keepalive_read(fd, out)
    if rc:
        raise _failure(rc, fd, None)
    return _settings(out)


@dataclass(frozen=True, slots=True)
class HostKeepalive:
    """The host's keepalive defaults (net.ipv4.tcp_keepalive_time, _intvl, _probes).

    They apply to sockets that enable SO_KEEPALIVE without setting their own values.
    """

    idle: int
    interval: int
    count: int

    #: Linux's built-in defaults.
    LINUX_DEFAULTS = (7200, 75, 9)

    @property
    def detection_time(self) -> int:
        """Seconds until an idle connection to a silent peer is declared dead."""
        return self.idle + self.interval * self.count

    @property
    def is_linux_default(self) -> bool:
        """True when the host still runs Linux's 7200/75/9 (over two hours to notice)."""
        return (self.idle, self.interval, self.count) == self.LINUX_DEFAULTS


def system_keepalive() -> HostKeepalive:
    """Return the host's keepalive defaults from /proc/sys/net/ipv4/tcp_keepalive_*.

    Raises UnsupportedPlatformError where those files do not exist (not Linux).
    """
    values = []
    for name in ("time", "intvl", "probes"):
        value = _host.sysctl_int(f"net.ipv4.tcp_keepalive_{name}")
        if value is None:
            raise UnsupportedPlatformError(
                errno.ENOENT, f"host keepalive defaults are read from {_SYSCTL}{name}, "
                "which is missing or unreadable")
        values.append(value)
    return HostKeepalive(*values)
