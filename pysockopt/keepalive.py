"""TCP keepalive: validated configuration, one-call apply with read-back, host defaults.

Keepalive makes the kernel notice a peer that vanished without FIN or RST: after ``idle``
seconds without traffic it sends a probe every ``interval`` seconds and drops the connection
after ``count`` unanswered ones, so a silent peer is declared dead after
``idle + interval * count`` seconds (Linux's defaults, 7200/75/9, take 2 h 11 min).
Keepalive does nothing while data is unacknowledged; ``user_timeout_ms`` (TCP_USER_TIMEOUT)
bounds that case, and once it is set the kernel also ends the probing by it, not by ``count``
(``KeepaliveConfig.detection_time`` says what the kernel really does; docs/keepalive.md has
the derivation from net/ipv4/tcp_timer.c).
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from . import _host
from ._core import ffi, lib
from ._platform import KEEPALIVE_INHERITED_BY_ACCEPT
from ._sock import SocketLike, closed_during_call, fileno_of, filenos_of, os_error, replaced
from ._validate import check_int, check_seconds
from .errors import InvalidConfigError, UnsupportedPlatformError

__all__ = [
    "INHERITED_BY_ACCEPT",
    "LIMITS",
    "HostKeepalive",
    "KeepaliveConfig",
    "KeepaliveReport",
    "KeepaliveSettings",
    "apply_keepalive",
    "apply_keepalive_many",
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


#: Whether sockets accepted from a listener inherit its keepalive options and
#: TCP_USER_TIMEOUT (see pysockopt._platform). The tests check it on the running kernel.
INHERITED_BY_ACCEPT: Final = KEEPALIVE_INHERITED_BY_ACCEPT

#: The shortest TCP_USER_TIMEOUT for_detection() sets: the first retransmission comes
#: TCP_RTO_MIN (200 ms) after a loss and the next 400 ms later, so 1 s still lets a live
#: connection retransmit twice before the user timeout aborts it.
MIN_USER_TIMEOUT_MS: Final = 1000


def _keepalive_abort(idle: int, interval: int, count: int, uto_ms: int) -> tuple[int, int]:
    """Return (seconds of silence until an idle connection is aborted, probes sent by then).

    tcp_keepalive_timer runs ``idle`` s after the peer's last packet and then every
    ``interval`` s, sending one probe per run. Without a user timeout it aborts at the run
    that finds ``count`` probes unanswered. With TCP_USER_TIMEOUT set it aborts instead at
    the first run that finds at least one probe out and the silence at least the user
    timeout long: TCP_KEEPCNT is not consulted.
    """
    if uto_ms <= 0:
        return idle + interval * count, count
    runs = max(1, -(-(uto_ms - idle * 1000) // (interval * 1000)))
    return idle + interval * runs, runs


def _worst_case(idle: int, interval: int, count: int, uto_ms: int) -> float | None:
    # Data written just before the keepalive abort (or still unacknowledged when the peer
    # vanished) is retransmitted until the user timeout, counted from that data's first
    # transmission: the worst write pattern adds the whole user timeout to the idle figure.
    if uto_ms <= 0:
        return None
    # In milliseconds first: abort + uto_ms / 1000 in floats can land a hair past the budget.
    return (_keepalive_abort(idle, interval, count, uto_ms)[0] * 1000 + uto_ms) / 1000


def _split(phase: int, uto_ms: int, count: int) -> tuple[int, int] | None:
    """Return (idle, interval) whose ``count``-th probe run is at ``phase`` s, or None.

    Linux aborts at the first run at or past the user timeout, so the first ``count - 1``
    runs must come before it: ``idle + (count - 1) * interval < user timeout <= phase``.
    """
    high = LIMITS["interval"][1]
    if phase < count + 1 or uto_ms > phase * 1000:
        return None
    low = 1 if count == 1 else (phase * 1000 - uto_ms) // 1000 + 1
    top = min((phase - 1) // count, high)
    # Probes take about half the keepalive phase (at least 1 s apart), as many as fit.
    interval = max(low, min(top, max(1, phase // (2 * count))))
    if phase - count * interval > LIMITS["idle"][1]:  # a long phase: idle is capped
        interval = max(interval, -(-(phase - LIMITS["idle"][1]) // count))
    if interval > top:
        return None
    return phase - count * interval, interval


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
        """Seconds from a silent peer's last packet until an idle connection is declared dead.

        ``idle + interval * count`` without a user timeout (``user_timeout_ms`` None or 0).
        With TCP_USER_TIMEOUT the kernel ends the probing at the first probe slot at or past
        the user timeout instead, whatever ``count`` says (see ``probes``).
        """
        return _keepalive_abort(self.idle, self.interval, self.count,
                                self.user_timeout_ms or 0)[0]

    @property
    def probes(self) -> int:
        """Keepalive probes the kernel sends unanswered before it gives up on an idle peer.

        ``count`` without a user timeout; with one, the number of probe slots before the
        user timeout has passed.
        """
        return _keepalive_abort(self.idle, self.interval, self.count,
                                self.user_timeout_ms or 0)[1]

    @property
    def worst_case_detection(self) -> float | None:
        """Seconds from the peer's last ACK until the kernel declares it dead, any writes.

        A write at any moment restarts TCP_USER_TIMEOUT's clock (it counts from the oldest
        unacknowledged data's first transmission, and keepalive stops probing while data is
        in flight), so the worst case is a write just before the keepalive abort:
        ``detection_time + user_timeout_ms / 1000``. None without a user timeout: data in
        flight is then retransmitted for net.ipv4.tcp_retries2 (about 15 minutes).
        """
        return _worst_case(self.idle, self.interval, self.count, self.user_timeout_ms or 0)

    @classmethod
    def for_detection(
        cls, seconds: float, *, count: int | None = None, user_timeout: float | None = None
    ) -> KeepaliveConfig:
        """Return a config whose kernel declares a vanished peer dead within ``seconds``.

        The bound holds from the peer's last ACK for every write pattern: idle, data in
        flight, a write at any moment of the idle time or the probing, a steady trickle. The
        kernel takes at most ``detection_time`` (keepalive) plus the user timeout, since a
        write just before the keepalive abort waits out the whole user timeout; and the
        keepalive phase cannot end before the user timeout, so the user timeout is at most
        half the budget.

        ``user_timeout`` (seconds; default: half the budget) is TCP_USER_TIMEOUT, and the
        keepalive phase gets the rest (``detection_time == seconds - user_timeout``, in whole
        seconds), with ``count`` probes in its second half. A shorter user timeout finds
        data in flight sooner but aborts a live connection whose data stays unacknowledged
        through a stall that long, and leaves room for fewer probes: Linux ends the probing
        at the first probe slot past the user timeout, so ``count`` probes need a user
        timeout longer than all but the last of them. See docs/keepalive.md for the numbers.

        ``count`` not given: as many probes, up to 3, as the budget allows (``for_detection(5)``
        sends one, ``(6)`` two, ``(10)`` three). An explicit ``count`` that does not fit
        raises InvalidConfigError.
        """
        if count is None:
            check_seconds("seconds", seconds)
            for probes in (3, 2):
                with contextlib.suppress(InvalidConfigError):
                    return cls.for_detection(seconds, count=probes, user_timeout=user_timeout)
            return cls.for_detection(seconds, count=1, user_timeout=user_timeout)
        budget = check_seconds("seconds", seconds)
        _check("count", count)
        # Rounded to the microsecond first: 7.001 * 1000 is 7000.999..., which floor makes 7000.
        budget_ms = math.floor(round(budget * 1000, 3))
        max_phase = LIMITS["idle"][1] + LIMITS["interval"][1] * count
        max_ms = min(2000 * max_phase, 2 * LIMITS["user_timeout_ms"][1])
        if budget_ms > max_ms:
            raise InvalidConfigError(
                "seconds", seconds, f"at most {max_ms // 1000} for count={count}",
                "the kernel's limits (idle, interval <= 32767 s, TCP_USER_TIMEOUT <= 2**31-1 "
                "ms) end the probing sooner, and the user timeout takes at most as long again")
        if user_timeout is None:
            # Half each: the longest user timeout the budget allows (the most tolerant of a
            # transient stall) and the keepalive phase ending exactly at it.
            phase = -(-budget_ms // 2000)
            tries = [(phase, budget_ms - phase * 1000), (phase - 1, (phase - 1) * 1000)]
        else:
            uto = check_seconds("user_timeout", user_timeout)
            uto_ms = round(uto * 1000)
            if not MIN_USER_TIMEOUT_MS <= uto_ms <= budget_ms // 2:
                raise InvalidConfigError(
                    "user_timeout", user_timeout,
                    f"{MIN_USER_TIMEOUT_MS / 1000:g}..{budget_ms / 2000:g} s for seconds={seconds}",
                    "the keepalive phase cannot end before the user timeout, and a write just "
                    "before its end waits the user timeout again, so it takes at most half")
            top = min((budget_ms - uto_ms) // 1000, max_phase)
            if count > 1:
                # count probes need idle + (count - 1) * interval < user timeout, so the phase
                # (idle + count * interval) is below count/(count-1) user timeouts.
                top = min(top, (count * uto_ms - 1000) // ((count - 1) * 1000) + 1)
            tries = [(p, uto_ms) for p in range(top, count, -1)]
        for phase, uto_ms in tries:
            if uto_ms < MIN_USER_TIMEOUT_MS:
                continue
            found = _split(phase, uto_ms, count)
            if found is not None:
                return cls(found[0], found[1], count, uto_ms)
        if user_timeout is not None:
            raise InvalidConfigError(
                "count", count, "fewer probes",
                f"with user_timeout={user_timeout} the kernel ends the probing at the first "
                f"probe after {user_timeout} s; {count} probes do not fit in the "
                f"{seconds} s budget (lower count, or raise user_timeout)")
        need = 3 if count == 1 else 2 * count + 1.001
        raise InvalidConfigError(
            "seconds", seconds, f"at least {need:g} for count={count}",
            "needs idle >= 1 s and count probes >= 1 s apart ending at the user timeout "
            f"(>= {MIN_USER_TIMEOUT_MS / 1000:g} s), plus that user timeout again")

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
        """Seconds until an idle dead peer is noticed; None while keepalive is disabled.

        As KeepaliveConfig.detection_time: with a user timeout in force the kernel ends the
        probing by it, not by ``count``.
        """
        if not self.enabled:
            return None
        return _keepalive_abort(self.idle, self.interval, self.count, self.user_timeout_ms)[0]

    @property
    def worst_case_detection(self) -> float | None:
        """Seconds until a dead peer is noticed whatever is written (see KeepaliveConfig).

        None while keepalive is disabled or no user timeout is in force.
        """
        if not self.enabled:
            return None
        return _worst_case(self.idle, self.interval, self.count, self.user_timeout_ms)


class KeepaliveReport(NamedTuple):
    """What apply_keepalive asked for and, when verified, what the kernel now reports.

    ``listening`` is True when the socket was a listener (SO_ACCEPTCONN) at apply time, False
    when it was not, None when unverified; ``inherited`` says whether sockets accepted from
    it will carry the settings.
    """

    requested: KeepaliveConfig
    effective: KeepaliveSettings | None
    listening: bool | None = None

    @property
    def inherited(self) -> bool | None:
        """True when applied to a listener whose accepted sockets inherit the settings.

        On Linux an accepted socket is a copy of its listener: SO_KEEPALIVE, TCP_KEEPIDLE,
        TCP_KEEPINTVL, TCP_KEEPCNT and TCP_USER_TIMEOUT come with it, and the keepalive timer
        starts when the connection is established. One call on the listener then serves
        every connection, with no syscall per accept. None when the report was not verified
        (``listening`` unknown).
        """
        if self.listening is None:
            return None
        return self.listening and INHERITED_BY_ACCEPT

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


if len(_OPTION_NAMES) != lib.PSO_KA_NOPTIONS:  # pragma: no cover - a build mismatch
    raise ImportError("pysockopt._native does not match keepalive.py (PSO_KA_NOPTIONS)")


def _settings(out: object) -> KeepaliveSettings:
    # Values come in PSO_KA_* order: idle, interval, count, user timeout, SO_KEEPALIVE.
    idle, interval, count, uto, enabled = _unpack(out.values, 5)  # type: ignore[attr-defined]
    return KeepaliveSettings(bool(enabled), idle, interval, count, uto)


_unpack = ffi.unpack
_new_out = ffi.new_allocator(should_clear_after_alloc=False)
#: Result buffers (struct pso_keepalive: values and failure context) owned per call: a call
#: pops one, or makes one when none is free, and puts it back once it has read it. A signal
#: handler that calls in between pops another (or makes its own), never the one being read;
#: per thread would not do (measured: 46% of verified applies read a nested call's values).
#: The pool holds at most as many as calls ever ran at once.
_pool: list[object] = []
_take = _pool.pop
_give = _pool.append


def _out_buffer() -> object:
    """Return a result buffer that the caller owns until it gives it back with ``_give``."""
    try:
        return _take()
    except IndexError:  # none free: this thread's first call, or a nested / concurrent one
        return _new_out("struct pso_keepalive *")


def _failure(rc: int, fd: int, config: KeepaliveConfig | None, out: object) -> OSError:
    # Which step failed is in this call's own result buffer, next to the -errno returned.
    option = out.failed_option  # type: ignore[attr-defined]
    if out.failed_while_setting:  # type: ignore[attr-defined]
        return _set_failure(rc, fd, config, option)
    name = _OPTION_NAMES[option] if 0 <= option < len(_OPTION_NAMES) else "?"
    return os_error(rc, f"reading {name} from fd {fd}")


def _set_failure(rc: int, fd: int, config: KeepaliveConfig | None, option: int) -> OSError:
    """Build the OSError of a failed setsockopt: the option that failed and those applied."""
    name = _OPTION_NAMES[option] if 0 <= option < len(_OPTION_NAMES) else "?"
    applied = [n for i, n in enumerate(_OPTION_NAMES[:option])
               if not (i == lib.PSO_KA_USER_TIMEOUT and config is not None
                       and config.user_timeout_ms is None)]
    done = ", ".join(applied) if applied else "nothing"
    what = f"setting {name} on fd {fd}; already applied: {done}"
    return os_error(rc, what)


def _closed(fd: int, setting: bool) -> OSError:
    if setting:
        return closed_during_call(fd, "apply_keepalive (the options may have been set on the "
                                      "socket that took the number)")
    return closed_during_call(fd, "read_keepalive")


_set = lib.pso_keepalive_set
_SOL_SOCKET: Final = socket.SOL_SOCKET
_SO_ACCEPTCONN: Final = socket.SO_ACCEPTCONN
_NULL = ffi.NULL
_set_verify = lib.pso_keepalive_set_verify
_read = lib.pso_keepalive_read
_socket = socket.socket


def _listening(fd: int) -> bool:
    # For descriptors and fileno() objects; a socket.socket is asked directly (inline below).
    probe = socket.socket(fileno=fd)
    try:
        return bool(probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    finally:
        probe.detach()  # the descriptor is the caller's


def apply_keepalive(
    sock: SocketLike, config: KeepaliveConfig, *, verify: bool = True
) -> KeepaliveReport:
    """Enable keepalive on ``sock`` with ``config``, in one native call.

    Sets TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT (unless None) and then
    SO_KEEPALIVE. With ``verify`` the same call reads all of them back and the report holds
    requested and effective values. On failure the OSError (ConnectionError, OSError with
    EBADF, ENOTSOCK, ...) names the option that failed and the ones already applied; a UDP or
    Unix socket fails on the first option, before anything changed. An object whose
    ``fileno()`` raises ValueError (a closed file object) is OSError(EBADF), as in
    poll_tcp_info. The call runs without the GIL: if another thread closes the socket object
    meanwhile, OSError(EBADF) says so (the options may then have reached the socket that took
    its number); an int descriptor is the caller's to keep open.

    A listening socket takes the options too: on Linux every socket it accepts inherits them
    (``report.inherited``), so a server calls this once on its listener instead of once per
    connection.
    """
    # This path is benchmarked against four bare sock.setsockopt calls: keep it to attribute
    # loads, one native call and one fileno() to check the socket is still the one set.
    try:
        req = config._req
    except AttributeError:
        raise TypeError(
            f"config must be a KeepaliveConfig, not {type(config).__name__}"
        ) from None
    if not verify:
        # No result buffer to own: the report is the config's shared one. On failure the call
        # is made again with a buffer, to learn which option failed (C: keepalive.h).
        if sock.__class__ is _socket:
            fd = sock.fileno()
            if _set(fd, req, _NULL) or sock.fileno() != fd:
                _set_again(sock, fd, config)
        else:
            fd = fileno_of(sock)
            if _set(fd, req, _NULL) or replaced(sock, fd):
                _set_again(sock, fd, config)
        return config._unverified
    try:
        out = _take()
    except IndexError:
        out = _new_out("struct pso_keepalive *")
    if sock.__class__ is _socket:
        fd = sock.fileno()
        rc = _set_verify(fd, req, out)
        if rc or sock.fileno() != fd:  # closed during the call: whatever rc says, EBADF
            raise _closed(fd, True) if sock.fileno() != fd else _failure(rc, fd, config, out)
    else:
        fd = fileno_of(sock)
        rc = _set_verify(fd, req, out)
        if rc or replaced(sock, fd):
            raise _closed(fd, True) if replaced(sock, fd) else _failure(rc, fd, config, out)
    settings = _settings(out)
    _give(out)
    # One more getsockopt (~0.3 us), on the verify path only: verify=False stays one native
    # call, and reports listening=None.
    if type(sock) is _socket:
        listening = bool(sock.getsockopt(_SOL_SOCKET, _SO_ACCEPTCONN))
    else:
        listening = _listening(fd)
    return KeepaliveReport(config, settings, listening)


def _set_again(sock: SocketLike, fd: int, config: KeepaliveConfig) -> None:
    """Raise the error of a failed verify=False call, with this call's own failure context.

    The call is made again with a result buffer that records which option failed; if the
    socket was closed meanwhile, EBADF says so. Should the repeat succeed (the cause went away
    between the two), the options are in effect and nothing is raised.
    """
    if replaced(sock, fd):
        raise _closed(fd, True)
    out = _new_out("struct pso_keepalive *")
    rc = _set(fd, config._req, out)
    if replaced(sock, fd):
        raise _closed(fd, True)
    if rc:
        raise _failure(rc, fd, config, out)


def apply_keepalive_many(
    socks: Iterable[SocketLike], config: KeepaliveConfig
) -> list[KeepaliveReport | OSError]:
    """Enable keepalive with ``config`` on every socket of ``socks`` in ONE native call.

    ``apply_keepalive(sock, config, verify=False)`` for many sockets: each entry of the list,
    in order, is the config's unverified KeepaliveReport (``settings`` None) or the OSError
    for that socket (naming the option that failed and those already applied; a closed
    descriptor EBADF, a UDP or Unix socket ENOPROTOOPT/EOPNOTSUPP before anything changed, a
    pipe ENOTSOCK). One bad socket never fails the others. An entry that is not socket-like
    at all is a programming error: TypeError naming its index, before any syscall. The call
    runs without the GIL: an object that another thread closed meanwhile gets OSError(EBADF)
    (the options may then have reached the socket that took its number); an int descriptor is
    the caller's to keep open.
    """
    try:
        req = config._req
    except AttributeError:
        raise TypeError(
            f"config must be a KeepaliveConfig, not {type(config).__name__}"
        ) from None
    if type(socks) is not tuple:  # a snapshot: the caller's list may change during the call
        socks = tuple(socks)
    try:
        fds = list(map(_socket_fileno, socks))  # C-level for socket.socket entries
        bad: dict[int, OSError] = {}
        every_socket = True
    except TypeError:
        fds, bad = filenos_of(socks, "apply_keepalive_many")
        every_socket = False
    n = len(fds)
    report = config._unverified
    if n == 0:
        return []
    rcs = _new_ints("int[]", n)
    failed = _new_ints("int[]", n)
    # struct.pack converts the list to C ints in one C loop (cffi's list conversion cost
    # ~4x as much per entry); the native call reads them in place.
    with ffi.from_buffer("int[]", _pack(f"{n}i", *fds)) as at:
        nfailed = _set_many(at, n, req, rcs, failed)
    if nfailed < 0:
        raise os_error(nfailed, "applying keepalive to a batch")
    out: list[KeepaliveReport | OSError] = [report] * n
    if nfailed:
        for i, rc in enumerate(ffi.unpack(rcs, n)):
            if rc:
                out[i] = bad[i] if i in bad else _set_failure(rc, fds[i], config, failed[i])
    # Which objects still hold the descriptor their entry was set on: one C-level pass.
    if every_socket:
        if list(map(_socket_fileno, socks)) != fds:
            for i, s in enumerate(socks):
                if _socket_fileno(s) != fds[i]:
                    out[i] = _closed(fds[i], True)
    else:
        for i, s in enumerate(socks):
            if i not in bad and replaced(s, fds[i]):
                out[i] = _closed(fds[i], True)
    return out


_set_many = lib.pso_keepalive_set_many
_pack = struct.pack
_new_ints = ffi.new_allocator(should_clear_after_alloc=False)
_socket_fileno = socket.socket.fileno


def read_keepalive(sock: SocketLike) -> KeepaliveSettings:
    """Return the keepalive settings in force on ``sock`` (enabled flag included).

    Errors as in apply_keepalive: OSError naming the option that could not be read; EBADF for
    a closed object, also one closed by another thread during the call.
    """
    fd = fileno_of(sock)
    out = _out_buffer()
    rc = _read(fd, out)
    if replaced(sock, fd):  # checked first: what the call read (or failed on) is not sock's
        raise _closed(fd, False)
    if rc:
        raise _failure(rc, fd, None, out)
    settings = _settings(out)
    _give(out)
    return settings


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
        path = _host.sysctl_path(f"net.ipv4.tcp_keepalive_{name}")
        try:
            with open(path, encoding="ascii") as f:
                values.append(int(f.read().strip()))
        except FileNotFoundError as err:  # unreadable or garbled raises as itself
            raise UnsupportedPlatformError(
                err.errno, f"host keepalive defaults are read from {path}, which is missing"
            ) from err
    return HostKeepalive(*values)
