"""Results are never another socket's: nested calls in one thread and descriptor reuse.

A signal handler runs between two bytecodes of the interrupted function, e.g. right after a
native call returned and before its result was read; another thread may close a socket (and a
new one take its descriptor number) while the native call runs without the GIL. Both moments
are hit exactly here with the interpreter's profile hook, which runs code at the call and the
return of a named native function, as a signal handler or a racing thread would: real sockets,
real syscalls, the nested call or the descriptor swap at the one point where it does harm.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from pysockopt import (
    KeepaliveConfig,
    TcpState,
    apply_keepalive,
    poll_tcp_info,
    read_keepalive,
    tcp_info,
)

A = KeepaliveConfig(111, 11, 3)
B = KeepaliveConfig(222, 22, 5)


@contextlib.contextmanager
def at_native(event: str, name: str, action: Callable[[], object]) -> Iterator[list[bool]]:
    """Run ``action`` once, at the first ``event`` ("c_call" / "c_return") of native ``name``."""
    fired: list[bool] = []

    def hook(frame: object, ev: str, arg: object) -> None:
        if ev == event and not fired and getattr(arg, "__name__", None) == name:
            fired.append(True)  # the hook is not re-entered while it runs
            action()

    sys.setprofile(hook)
    try:
        yield fired
    finally:
        sys.setprofile(None)
    assert fired, f"{name} was never called: the test no longer covers what it says"


class Fileno:
    """A socket-like object that is not a socket.socket (as some wrappers are)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


@pytest.fixture
def two() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """A listener and two connected clients: a has keepalive A, b has keepalive B."""
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname())
    a_peer, _ = listener.accept()
    b = socket.create_connection(listener.getsockname())
    b_peer, _ = listener.accept()
    apply_keepalive(a, A)
    apply_keepalive(b, B)
    yield listener, a, b
    for s in (listener, a, a_peer, b, b_peer):
        s.close()


def _quietly(call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(OSError):
            call()
    return run


# --- a nested call between the native call and the reading of its result


def test_nested_tcp_info_on_int_fd_keeps_the_outer_result(two: tuple[socket.socket, ...]) -> None:
    listener, _, b = two
    with at_native("c_return", "pso_tcp_info", lambda: tcp_info(b.fileno())):
        info = tcp_info(listener.fileno())
    assert info.state == TcpState.LISTEN


def test_nested_tcp_info_on_fileno_object_keeps_the_outer_result(
    two: tuple[socket.socket, ...],
) -> None:
    listener, _, b = two
    with at_native("c_return", "pso_tcp_info", lambda: tcp_info(Fileno(b))):
        info = tcp_info(Fileno(listener))
    assert info.state == TcpState.LISTEN


def test_nested_read_keepalive_keeps_the_outer_result(two: tuple[socket.socket, ...]) -> None:
    _, a, b = two
    with at_native("c_return", "pso_keepalive_read", lambda: read_keepalive(b.fileno())):
        settings = read_keepalive(a.fileno())
    assert (settings.idle, settings.interval, settings.count) == (111, 11, 3)


def test_nested_apply_verify_keeps_the_outer_report(two: tuple[socket.socket, ...]) -> None:
    _, a, b = two
    with at_native("c_return", "pso_keepalive_set_verify",
                   lambda: apply_keepalive(b.fileno(), B)):
        report = apply_keepalive(a.fileno(), A)
    assert report.effective is not None and report.effective.idle == 111 and report.ok


def test_nested_failure_keeps_the_outer_failed_step(two: tuple[socket.socket, ...]) -> None:
    # The outer call fails while setting TCP_KEEPIDLE; the nested one fails while reading it.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed = socket.socket()
    fd = closed.fileno()
    closed.close()
    try:
        with at_native("c_return", "pso_keepalive_set",
                       _quietly(lambda: read_keepalive(udp))), pytest.raises(OSError) as outer:
            apply_keepalive(fd, A, verify=False)
    finally:
        udp.close()
    assert outer.value.errno == errno.EBADF
    assert "setting TCP_KEEPIDLE" in str(outer.value), outer.value
    assert "already applied: nothing" in str(outer.value)


def test_nested_parse_failure_keeps_the_outer_bad_line() -> None:
    from pysockopt.host.connections import parse_proc

    header = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    nested = _quietly(lambda: parse_proc(b"no header\n", socket.AF_INET))  # bad line 1
    with at_native("c_return", "pso_proc_parse", nested), pytest.raises(OSError) as outer:
        parse_proc(header + b"x\n", socket.AF_INET)
    assert "line 2" in str(outer.value), outer.value


def test_nested_poll_keeps_the_outer_batch(two: tuple[socket.socket, ...]) -> None:
    listener, _, b = two
    with at_native("c_return", "pso_tcp_info_poll", lambda: poll_tcp_info([b] * 3)):
        results = poll_tcp_info([listener] * 3)
    assert all(not isinstance(r, OSError) and r.state == TcpState.LISTEN for r in results)


def test_real_signal_handler_nesting_never_mixes_results(two: tuple[socket.socket, ...]) -> None:
    # The same with real signals at random points. The timer fires every 50 us, or every four
    # handler runs' worth of time where a handler run takes longer (an emulated CPU, a loaded
    # host): a timer that outruns its handler only nests handlers until RecursionError.
    listener, a, b = two
    lfd, afd, bfd = listener.fileno(), a.fileno(), b.fileno()
    t0 = time.perf_counter()
    for _ in range(200):
        tcp_info(bfd)
        read_keepalive(bfd)
    interval = max(0.00005, 4 * (time.perf_counter() - t0) / 200)
    depth = ran = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal depth, ran
        if depth:  # a signal while the handler runs: the handler's calls are not under test
            return
        depth += 1
        try:
            tcp_info(bfd)
            read_keepalive(bfd)
            ran += 1
        finally:
            depth -= 1

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    wrong = calls = 0
    try:
        # Half a second, and at least 500 handler runs among the calls (within 60 s).
        start = time.monotonic()
        while time.monotonic() < start + 0.5 or (ran < 500 and time.monotonic() < start + 60):
            wrong += tcp_info(lfd).state != TcpState.LISTEN
            wrong += read_keepalive(afd).idle != 111
            calls += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert wrong == 0, f"{wrong} wrong results in {calls} calls, {ran} handler runs"
    assert ran >= 500, f"the handler ran {ran} times only (every {interval * 1e6:.0f} us)"


# --- a descriptor closed and its number reused while the native call runs


def _swap(victim: socket.socket, listener: socket.socket,
          keep: list[socket.socket]) -> Callable[[], None]:
    """Close ``victim`` and put a connected socket on its descriptor number."""
    def run() -> None:
        fd = victim.fileno()
        victim.close()
        client = socket.create_connection(listener.getsockname())
        keep.append(client)
        if client.fileno() != fd:  # a lower number was free: take the victim's on purpose
            os.dup2(client.fileno(), fd)
            keep.append(socket.socket(fileno=fd))
    return run


def test_poll_entry_whose_socket_was_replaced_is_ebadf(two: tuple[socket.socket, ...]) -> None:
    listener, a, _ = two
    other = socket.create_server(("127.0.0.1", 0))
    keep: list[socket.socket] = []
    try:
        with at_native("c_call", "pso_tcp_info_poll", _swap(other, listener, keep)):
            results = poll_tcp_info([listener, other, a])
        assert not isinstance(results[0], OSError) and results[0].state == TcpState.LISTEN
        assert isinstance(results[1], OSError) and results[1].errno == errno.EBADF
        assert not isinstance(results[2], OSError) and results[2].state == TcpState.ESTABLISHED
    finally:
        for s in [*keep, other]:
            s.close()


def test_poll_entry_of_fileno_object_replaced_is_ebadf(two: tuple[socket.socket, ...]) -> None:
    listener, _, _ = two
    other = socket.create_server(("127.0.0.1", 0))
    keep: list[socket.socket] = []
    try:
        with at_native("c_call", "pso_tcp_info_poll", _swap(other, listener, keep)):
            results = poll_tcp_info([Fileno(listener), Fileno(other)])
        assert not isinstance(results[0], OSError)
        assert isinstance(results[1], OSError) and results[1].errno == errno.EBADF
    finally:
        for s in [*keep, other]:
            s.close()


def test_tcp_info_of_fileno_object_replaced_is_ebadf(two: tuple[socket.socket, ...]) -> None:
    listener, _, _ = two
    other = socket.create_server(("127.0.0.1", 0))
    keep: list[socket.socket] = []
    try:
        with (at_native("c_call", "pso_tcp_info", _swap(other, listener, keep)),
              pytest.raises(OSError) as info):
            tcp_info(Fileno(other))
        assert info.value.errno == errno.EBADF
    finally:
        for s in [*keep, other]:
            s.close()


@pytest.mark.parametrize("native, call", [
    ("pso_keepalive_read", read_keepalive),
    ("pso_keepalive_set_verify", lambda s: apply_keepalive(s, B)),
    ("pso_keepalive_set", lambda s: apply_keepalive(s, B, verify=False)),
])
def test_keepalive_on_socket_replaced_is_ebadf(two: tuple[socket.socket, ...], native: str,
                                               call: Callable[[object], object]) -> None:
    listener, _, _ = two
    victim = socket.create_connection(listener.getsockname())
    keep: list[socket.socket] = []
    try:
        with (at_native("c_call", native, _swap(victim, listener, keep)),
              pytest.raises(OSError) as info):
            call(victim)
        assert info.value.errno == errno.EBADF
        assert "closed" in str(info.value)
    finally:
        for s in [*keep, victim]:
            s.close()


@pytest.mark.parametrize("native, call", [
    ("pso_keepalive_read", read_keepalive),
    ("pso_keepalive_set", lambda s: apply_keepalive(s, B, verify=False)),
    ("pso_tcp_info", lambda s: tcp_info(Fileno(s))),
])
def test_replaced_by_a_socket_the_call_fails_on_is_still_ebadf(
    two: tuple[socket.socket, ...], native: str, call: Callable[[object], object],
) -> None:
    # The number now belongs to a Unix socket: the syscall fails (EOPNOTSUPP), but what the
    # caller must hear is that its own socket was closed.
    listener, _, _ = two
    victim = socket.create_connection(listener.getsockname())
    keep: list[socket.socket] = []

    def swap() -> None:
        fd = victim.fileno()
        victim.close()
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        keep.append(unix)
        if unix.fileno() != fd:
            os.dup2(unix.fileno(), fd)
            keep.append(socket.socket(fileno=fd))

    try:
        with at_native("c_call", native, swap), pytest.raises(OSError) as info:
            call(victim)
        assert info.value.errno == errno.EBADF and "closed" in str(info.value)
    finally:
        for s in [*keep, victim]:
            s.close()


# --- the batch and compiled APIs keep the same guarantees


def test_nested_poller_keeps_the_outer_batch(two: tuple[socket.socket, ...]) -> None:
    from pysockopt import TcpInfoPoller

    listener, _, b = two
    inner = TcpInfoPoller([b] * 3)
    outer = TcpInfoPoller([listener] * 3)
    with at_native("c_return", "pso_tcp_info_poll", inner.poll):
        results = outer.poll()
    assert all(not isinstance(r, OSError) and r.state == TcpState.LISTEN for r in results)


def test_poller_entry_whose_socket_was_replaced_during_the_call_is_ebadf(
    two: tuple[socket.socket, ...],
) -> None:
    from pysockopt import TcpInfoPoller

    listener, a, _ = two
    other = socket.create_server(("127.0.0.1", 0))
    keep: list[socket.socket] = []
    try:
        poller = TcpInfoPoller([listener, other, Fileno(a)])
        with at_native("c_call", "pso_tcp_info_poll", _swap(other, listener, keep)):
            results = poller.poll()
        assert not isinstance(results[0], OSError) and results[0].state == TcpState.LISTEN
        assert isinstance(results[1], OSError) and results[1].errno == errno.EBADF
        assert not isinstance(results[2], OSError) and results[2].state == TcpState.ESTABLISHED
    finally:
        for s in [*keep, other]:
            s.close()


def test_keepalive_many_entry_replaced_during_the_call_is_ebadf(
    two: tuple[socket.socket, ...],
) -> None:
    from pysockopt import apply_keepalive_many

    listener, a, _ = two
    victim = socket.create_connection(listener.getsockname())
    keep: list[socket.socket] = []
    try:
        with at_native("c_call", "pso_keepalive_set_many", _swap(victim, listener, keep)):
            results = apply_keepalive_many([a, victim, Fileno(a)], B)
        assert not isinstance(results[0], OSError) and not isinstance(results[2], OSError)
        assert isinstance(results[1], OSError) and results[1].errno == errno.EBADF
        assert "closed" in str(results[1])
    finally:
        for s in [*keep, victim]:
            s.close()


def test_reader_on_fileno_object_replaced_is_ebadf(two: tuple[socket.socket, ...]) -> None:
    from pysockopt import tcp_info_reader

    listener, _, _ = two
    other = socket.create_server(("127.0.0.1", 0))
    keep: list[socket.socket] = []
    reader = tcp_info_reader("state")
    try:
        with (at_native("c_call", "pso_tcp_info", _swap(other, listener, keep)),
              pytest.raises(OSError) as info):
            reader(Fileno(other))
        assert info.value.errno == errno.EBADF
    finally:
        for s in [*keep, other]:
            s.close()
