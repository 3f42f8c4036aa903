from __future__ import annotations

import copy
import ctypes
import errno
import json
import math
import os
import pathlib
import pickle
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import run_cli
from hypothesis import example, given
from hypothesis import strategies as st
from netns import NetnsPair
from waiting import wait_for

import pysockopt
from pysockopt import (
    InvalidConfigError,
    KeepaliveConfig,
    apply_keepalive,
    read_keepalive,
    system_keepalive,
)
from pysockopt.keepalive import LIMITS

TCP = socket.IPPROTO_TCP
ROOT = pathlib.Path(__file__).resolve().parent.parent


# --- validation


@given(st.integers(1, 32767), st.integers(1, 32767), st.integers(1, 127),
       st.none() | st.integers(0, 2**31 - 1))
def test_in_range_values_are_accepted(idle: int, interval: int, count: int,
                                      uto: int | None) -> None:
    c = KeepaliveConfig(idle, interval, count, uto)
    assert (c.idle, c.interval, c.count, c.user_timeout_ms) == (idle, interval, count, uto)
    if not uto:
        assert c.detection_time == idle + interval * count and c.probes == count
        assert c.worst_case_detection is None


def _timer_runs(idle: int, interval: int, count: int, uto_ms: int) -> tuple[int, int]:
    """tcp_keepalive_timer, run by run: (second of the abort, probes sent by then)."""
    probes, now = 0, idle
    while True:
        if (uto_ms and now * 1000 >= uto_ms and probes > 0) or (not uto_ms and probes >= count):
            return now, probes
        probes += 1
        now += interval


@given(st.integers(1, 300), st.integers(1, 60), st.integers(1, 127),
       st.integers(0, 4000) | st.integers(0, 1_000_000))
def test_detection_time_follows_the_kernels_keepalive_timer(idle: int, interval: int,
                                                            count: int, uto: int) -> None:
    # With TCP_USER_TIMEOUT the timer aborts at its first run past the user timeout with a
    # probe out, whatever TCP_KEEPCNT says (net/ipv4/tcp_timer.c, tcp_keepalive_timer).
    c = KeepaliveConfig(idle, interval, count, uto)
    assert (c.detection_time, c.probes) == _timer_runs(idle, interval, count, uto)
    if uto:
        assert c.worst_case_detection == (c.detection_time * 1000 + uto) / 1000
    settings = pysockopt.KeepaliveSettings(True, idle, interval, count, uto)
    assert settings.detection_time == c.detection_time
    assert settings.worst_case_detection == c.worst_case_detection


@pytest.mark.parametrize("field", ["idle", "interval", "count", "user_timeout_ms"])
@given(data=st.data())
def test_out_of_range_values_name_field_value_and_range(field: str, data: st.DataObject) -> None:
    low, high = LIMITS[field]
    bad = data.draw(st.integers(max_value=low - 1) | st.integers(min_value=high + 1))
    kwargs = {"idle": 10, "interval": 5, "count": 3, "user_timeout_ms": None, field: bad}
    with pytest.raises(InvalidConfigError) as info:
        KeepaliveConfig(**kwargs)  # type: ignore[arg-type]  # bad values, on purpose
    assert isinstance(info.value, ValueError)
    assert info.value.field == field and info.value.value == bad
    assert f"{field}={bad}" in str(info.value) and f"{low}..{high}" in str(info.value)


@pytest.mark.parametrize("value", [1.5, 2.0, True, "5", None])
def test_non_int_seconds_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError) as info:
        KeepaliveConfig(value, 5, 3)  # type: ignore[arg-type]  # the wrong type on purpose
    assert "idle" in str(info.value)
    if isinstance(value, float):
        assert "one-second granularity" in str(info.value)


def test_config_is_frozen_hashable_and_picklable() -> None:
    c = KeepaliveConfig(10, 5, 3, 25000)
    with pytest.raises(AttributeError):
        c.idle = 3  # type: ignore[misc]  # frozen: the assignment must fail
    assert c == KeepaliveConfig(10, 5, 3, 25000) and hash(c) == hash(KeepaliveConfig(10, 5, 3,
                                                                                  25000))
    assert pickle.loads(pickle.dumps(c)) == c
    assert copy.deepcopy(c) == c


def _min_budget(count: int) -> float:
    # idle >= 1 s, count probes >= 1 s apart, user timeout >= 1 s past all but the last probe
    return 3 if count == 1 else 2 * count + 1.001


@given(st.integers(3, 200_000) | st.floats(2.5, 400) | st.integers(4_000_000, 9_000_000),
       st.integers(1, 127))
@example(3.999999999999943, 1)  # a hair under 4 s, which the microsecond reading makes 4 s
def test_for_detection_meets_budget_for_every_write_pattern(seconds: float, count: int) -> None:
    if seconds < _min_budget(count) or seconds > min(2 * (32767 + 32767 * count), 4294967):
        with pytest.raises(InvalidConfigError):
            KeepaliveConfig.for_detection(seconds, count=count)
        return
    c = KeepaliveConfig.for_detection(seconds, count=count)
    assert c.count == count and c.probes == count  # every probe is sent: none cut short
    assert c.user_timeout_ms is not None and c.user_timeout_ms >= 1000
    worst = c.worst_case_detection
    # The budget is read to the microsecond, as a decimal (7.001 * 1000 is 7000.999... in
    # floats; 3.999999999999943 reads as 4 s): whole milliseconds of that are the bound.
    budget = math.floor(round(seconds * 1000, 3)) / 1000
    assert worst is not None and worst <= budget
    # The keepalive phase ends at the user timeout: neither wastes the other's share.
    assert c.detection_time * 1000 >= c.user_timeout_ms
    if count > 1:  # (one probe is always sent: its slot is the abort at any user timeout)
        assert c.user_timeout_ms > (c.detection_time - c.interval) * 1000
    # It uses the budget: nothing is thrown away beyond what whole seconds force.
    assert worst > seconds - 1 - 1e-9
    # Summed in milliseconds (in seconds, float addition can land a hair past the budget).
    assert worst * 1000 == pytest.approx(
        _timer_runs(c.idle, c.interval, c.count, c.user_timeout_ms)[0] * 1000
        + c.user_timeout_ms, abs=1e-6)


def test_for_detection_examples() -> None:
    assert KeepaliveConfig.for_detection(30) == KeepaliveConfig(9, 2, 3, 15000)
    assert KeepaliveConfig.for_detection(10) == KeepaliveConfig(2, 1, 3, 5000)
    c = KeepaliveConfig.for_detection(10)
    assert (c.detection_time, c.probes, c.worst_case_detection) == (5, 3, 10.0)
    assert KeepaliveConfig.for_detection(9.5).worst_case_detection == 9.5
    assert KeepaliveConfig.for_detection(10.9).worst_case_detection == 10.0  # whole seconds
    with pytest.raises(InvalidConfigError, match="seconds=7"):
        KeepaliveConfig.for_detection(7, count=3)  # 3 probes and their user timeout need > 7 s
    assert KeepaliveConfig.for_detection(3, count=1) == KeepaliveConfig(1, 1, 1, 1000)
    with pytest.raises(TypeError):
        KeepaliveConfig.for_detection("30")  # type: ignore[arg-type]  # wrong type on purpose
    with pytest.raises(InvalidConfigError):
        KeepaliveConfig.for_detection(float("nan"))


@pytest.mark.parametrize(("seconds", "probes"), [
    (3, 1), (4, 1), (5, 1), (5.9, 2), (6, 2), (7, 2), (7.001, 3), (7.5, 3), (10, 3), (30, 3),
    (3600, 3)])
def test_for_detection_without_count_uses_as_many_probes_as_fit(
        seconds: float, probes: int) -> None:
    c = KeepaliveConfig.for_detection(seconds)
    assert c.count == c.probes == probes
    assert c == KeepaliveConfig.for_detection(seconds, count=probes)
    worst = c.worst_case_detection
    assert worst is not None and seconds - 1 - 1e-9 < worst <= seconds
    if probes < 3:  # one more probe does not fit: given explicitly, it is refused as before
        with pytest.raises(InvalidConfigError, match=f"count={probes + 1}"):
            KeepaliveConfig.for_detection(seconds, count=probes + 1)


def test_for_detection_five_seconds() -> None:
    c = KeepaliveConfig.for_detection(5)
    assert c == KeepaliveConfig(2, 1, 1, 2000)
    assert (c.detection_time, c.worst_case_detection) == (3, 5.0)
    with pytest.raises(InvalidConfigError, match="seconds=2"):
        KeepaliveConfig.for_detection(2)  # not even one probe and its user timeout
    # the user timeout chooses among the counts too; too long a one is still refused
    assert KeepaliveConfig.for_detection(10, user_timeout=3).probes == 2
    with pytest.raises(InvalidConfigError, match="user_timeout=6"):
        KeepaliveConfig.for_detection(10, user_timeout=6)


def test_for_detection_user_timeout_chooses_another_split() -> None:
    c = KeepaliveConfig.for_detection(10, count=1, user_timeout=3)
    assert c == KeepaliveConfig(4, 3, 1, 3000)
    assert (c.detection_time, c.worst_case_detection) == (7, 10.0)
    c = KeepaliveConfig.for_detection(30, user_timeout=12)
    assert c.user_timeout_ms == 12000 and c.probes == 3
    assert c.worst_case_detection is not None and c.worst_case_detection <= 30
    # More than half: the keepalive phase cannot end before it, so 2 x user timeout > budget.
    with pytest.raises(InvalidConfigError, match="user_timeout=6"):
        KeepaliveConfig.for_detection(10, user_timeout=6)
    with pytest.raises(InvalidConfigError, match=r"user_timeout=0\.5"):
        KeepaliveConfig.for_detection(10, user_timeout=0.5)
    # Three probes end at the first one past 3 s: they cannot fill a 7 s keepalive phase.
    with pytest.raises(InvalidConfigError, match="count=3") as info:
        KeepaliveConfig.for_detection(10, count=3, user_timeout=3)
    assert "lower count" in str(info.value)
    with pytest.raises(TypeError):
        KeepaliveConfig.for_detection(10, user_timeout="3")  # type: ignore[arg-type]  # on purpose


def test_socket_options_shape_matches_setsockopt() -> None:
    c = KeepaliveConfig(10, 5, 3, 25000)
    assert c.socket_options() == [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (TCP, socket.TCP_KEEPIDLE, 10),
        (TCP, socket.TCP_KEEPINTVL, 5),
        (TCP, socket.TCP_KEEPCNT, 3),
        (TCP, socket.TCP_USER_TIMEOUT, 25000),
    ]
    assert len(KeepaliveConfig(10, 5, 3).socket_options()) == 4


def test_socket_options_applied_by_hand_read_back(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    for level, opt, value in KeepaliveConfig(11, 4, 6, 9000).socket_options():
        client.setsockopt(level, opt, value)
    assert read_keepalive(client) == pysockopt.KeepaliveSettings(True, 11, 4, 6, 9000)


# --- apply and read back, checked through the stdlib's own getsockopt


@given(st.integers(1, 32767), st.integers(1, 32767), st.integers(1, 127),
       st.none() | st.integers(0, 2**31 - 1))
def test_apply_reads_back_through_stdlib(idle: int, interval: int, count: int,
                                         uto: int | None) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        before_uto = client.getsockopt(TCP, socket.TCP_USER_TIMEOUT)
        report = apply_keepalive(client, KeepaliveConfig(idle, interval, count, uto))
        assert report.ok and report.differences == ()
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert client.getsockopt(TCP, socket.TCP_KEEPIDLE) == idle
        assert client.getsockopt(TCP, socket.TCP_KEEPINTVL) == interval
        assert client.getsockopt(TCP, socket.TCP_KEEPCNT) == count
        expected_uto = before_uto if uto is None else uto
        assert client.getsockopt(TCP, socket.TCP_USER_TIMEOUT) == expected_uto
        assert report.effective is not None and report.effective.user_timeout_ms == expected_uto


def test_verify_false_returns_unverified_report(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    c = KeepaliveConfig(30, 7, 4)
    report = apply_keepalive(client, c, verify=False)
    assert not report.verified and not report.ok and report.effective is None
    assert report.requested is c
    assert client.getsockopt(TCP, socket.TCP_KEEPINTVL) == 7


def test_report_shows_differences_when_something_changed_it(
    tcp_pair: tuple[socket.socket, ...],
) -> None:
    client, _ = tcp_pair
    report = apply_keepalive(client, KeepaliveConfig(30, 7, 4))
    client.setsockopt(TCP, socket.TCP_KEEPCNT, 9)
    later = pysockopt.KeepaliveReport(report.requested, read_keepalive(client))
    assert later.differences == (("count", 4, 9),)
    assert not later.ok
    assert ("count", 4, 9) in later.rows()


def test_accepts_int_fd_and_fileno_objects(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, server = tcp_pair

    class Wrapper:
        def fileno(self) -> int:
            return server.fileno()

    apply_keepalive(client.fileno(), KeepaliveConfig(20, 2, 2))
    apply_keepalive(Wrapper(), KeepaliveConfig(21, 3, 3))
    assert read_keepalive(client.fileno()).idle == 20
    assert server.getsockopt(TCP, socket.TCP_KEEPIDLE) == 21


def test_read_keepalive_on_fresh_socket_shows_disabled() -> None:
    with socket.socket() as s:
        settings = read_keepalive(s)
        assert settings.enabled is False and settings.detection_time is None
        host = system_keepalive()
        assert (settings.idle, settings.interval, settings.count) == (
            host.idle, host.interval, host.count)


def test_system_keepalive_matches_proc() -> None:
    host = system_keepalive()
    def read(name: str) -> int:
        with open(f"/proc/sys/net/ipv4/tcp_keepalive_{name}") as f:
            return int(f.read())
    assert (host.idle, host.interval, host.count) == (read("time"), read("intvl"),
                                                      read("probes"))
    assert host.detection_time == host.idle + host.interval * host.count


# --- set once on the listener: accepted sockets inherit it


def _stdlib_keepalive(sock: socket.socket) -> tuple[int, ...]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(TCP, socket.TCP_KEEPCNT),
            sock.getsockopt(TCP, socket.TCP_USER_TIMEOUT))


def test_listener_report_says_accepted_sockets_inherit() -> None:
    config = KeepaliveConfig.for_detection(30)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        report = apply_keepalive(listener, config)
        assert report.ok and report.listening is True and report.inherited is True
        assert _stdlib_keepalive(listener) == (1, 9, 2, 3, 15000)
        # Through a descriptor or a fileno() object the report knows it too.
        assert apply_keepalive(listener.fileno(), config).listening is True
        assert listener.fileno() != -1  # the probe socket left the caller's descriptor open
    with socket.socket() as fresh:  # bound nowhere, not listening
        report = apply_keepalive(fresh, config)
        assert report.listening is False and report.inherited is False
    assert apply_keepalive(socket.socket(), config, verify=False).listening is None


def test_inheritance_is_at_the_handshake_so_apply_before_clients_connect() -> None:
    config = KeepaliveConfig.for_detection(30)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        early = socket.create_connection(listener.getsockname())  # handshake done, queued
        assert apply_keepalive(listener, config).inherited
        late = socket.create_connection(listener.getsockname())
        with early, late, listener.accept()[0] as first, listener.accept()[0] as second:
            # The kernel cloned the early one from the listener before it had the options.
            assert first.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            assert _stdlib_keepalive(second) == (1, 9, 2, 3, 15000)
    # Race-free: bind, apply, then listen. The report says the socket did not listen yet.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        report = apply_keepalive(listener, config)
        assert report.ok and report.listening is False and not report.inherited
        listener.listen()
        with socket.create_connection(listener.getsockname()), listener.accept()[0] as child:
            assert _stdlib_keepalive(child) == (1, 9, 2, 3, 15000)


def test_hundred_accepted_connections_inherit_the_listeners_settings() -> None:
    config = KeepaliveConfig.for_detection(20, count=4)
    expected = (1, config.idle, config.interval, config.count, config.user_timeout_ms)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    clients: list[socket.socket] = []
    accepted: list[socket.socket] = []
    try:
        assert apply_keepalive(listener, config).inherited
        for _ in range(100):
            clients.append(socket.create_connection(("127.0.0.1", port)))
            accepted.append(listener.accept()[0])
        # Every accepted socket, read through the stdlib, carries the listener's settings...
        assert [_stdlib_keepalive(s) for s in accepted] == [expected] * 100
        # ...while the connecting side, which nobody configured, does not.
        assert clients[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        # And the kernel armed each one's keepalive timer at accept: ss -o shows it.
        mine = {s.getpeername()[1] for s in accepted}
        timers = {c.remote_port: c for c in pysockopt.connections(states="ESTABLISHED",
                                                                  port=port)
                  if c.local_port == port}
        assert set(timers) == mine
        assert all(c.timer is pysockopt.Timer.KEEPALIVE for c in timers.values())
        assert all(0 < c.expires_ms <= config.idle * 1000 for c in timers.values())
    finally:
        for s in clients + accepted + [listener]:
            s.close()


def test_triage_of_a_dead_peers_errors_says_reconnect_and_why() -> None:
    # What the namespace tests see the kernel return for a vanished peer (tests/test_deadpeer).
    for code in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
        verdict = pysockopt.triage(OSError(code, os.strerror(code)))
        assert verdict.action is pysockopt.Action.RECONNECT
        assert verdict.info is not None and "dead peer" in verdict.info.meaning
        assert "dead peer" in verdict.reason


# --- docs/keepalive.md's server snippets, run against loopback

DOC = ROOT / "docs" / "keepalive.md"
_SNIPPET = re.compile(r"<!-- snippet: server (echo|http) -->\n```python\n(.*?)```", re.S)
_SYS_PIDFD_GETFD = 438  # x86_64 and the generic syscall table alike


def _server_snippets() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _SNIPPET.finditer(DOC.read_text())]


def _socket_owner(inode: int, pgid: int) -> tuple[int, int] | None:
    """(pid, fd) of the process in group ``pgid`` holding socket ``inode``, if any."""
    target = f"socket:[{inode}]"
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(entry.name), int(fd.name)
        except OSError:
            continue
    return None


def _read_from_outside(pid: int, fd: int) -> pysockopt.KeepaliveSettings:
    """The settings of another process's socket, through a pidfd_getfd duplicate."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        try:
            return read_keepalive(dup)
        finally:
            os.close(dup)
    finally:
        os.close(pidfd)


def test_docs_have_the_server_snippets() -> None:
    names = " ".join(code for _, code in _server_snippets())
    for server in ("asyncio.start_server", "socketserver", "uvicorn", "gunicorn",
                   "web.run_app"):
        assert server in names, server


@pytest.mark.parametrize("index", range(5))
def test_docs_server_snippet_runs_and_its_connections_inherit(index: int,
                                                              tmp_path: pathlib.Path) -> None:
    kind, code = _server_snippets()[index]
    for server_library in ("uvicorn", "gunicorn", "aiohttp"):
        # Installed by the test extra; a bare interpreter (.ci/pythons.sh) runs the others.
        if server_library in code:
            pytest.importorskip(server_library)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert "8000" in code
    script = tmp_path / "server.py"
    script.write_text(code.replace("8000", str(port)))
    # The WSGI application the gunicorn snippet names as "your application".
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok\\n']\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    server = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                              start_new_session=True, stderr=subprocess.PIPE)
    client: socket.socket | None = None

    def listener_configured() -> bool:
        # A connection that completes its handshake before the snippet's apply_keepalive is
        # cloned from a listener without the options: connect only once the listener has them.
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        for c in pysockopt.connections(states="LISTEN", port=port):
            owner = _socket_owner(c.inode, server.pid) if c.inode else None
            if owner is not None and _read_from_outside(*owner).enabled:
                return True
        return False

    def accepted() -> tuple[int, int] | None:
        # The server's side of this connection, once accepted (an inode: it has a file).
        assert client is not None
        mine = client.getsockname()[1]
        for c in pysockopt.connections(states="ESTABLISHED", port=port):
            if c.local_port == port and c.remote_port == mine and c.inode:
                assert c.timer is pysockopt.Timer.KEEPALIVE  # armed at accept
                return _socket_owner(c.inode, server.pid)
        return None

    try:
        # ceilings for a server's start (uvicorn, gunicorn: seconds natively, over 20 s on an
        # emulated CPU under load), never a measurement
        wait_for(listener_configured, 120, "the snippet to set keepalive on its listener")
        client = socket.create_connection(("127.0.0.1", port), timeout=60)
        owner = wait_for(accepted, 60, "the snippet to accept the connection")
        config = KeepaliveConfig.for_detection(30)
        assert config.user_timeout_ms is not None  # for_detection always sets one
        assert _read_from_outside(*owner) == pysockopt.KeepaliveSettings(
            True, config.idle, config.interval, config.count, config.user_timeout_ms)
        # And the server answers: the snippet is a working server, not just a listener.
        client.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n" if kind == "http" else b"hi\n")
        reply = client.recv(4096)
        assert (b" 200 " in reply) if kind == "http" else reply == b"hi\n", reply
    finally:
        if client is not None:
            client.close()
        os.killpg(server.pid, signal.SIGTERM)  # the group this test started
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


# --- bad input: a clear error, nothing lost


def test_closed_socket_is_ebadf() -> None:
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError) as info:
        apply_keepalive(fd, KeepaliveConfig(10, 5, 3))
    assert info.value.errno == errno.EBADF
    assert "TCP_KEEPIDLE" in str(info.value)
    with pytest.raises(OSError) as info:
        read_keepalive(s)
    assert info.value.errno == errno.EBADF


def test_pipe_is_enotsock() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            apply_keepalive(r, KeepaliveConfig(10, 5, 3))
        assert info.value.errno == errno.ENOTSOCK
        assert "TCP_KEEPIDLE" in str(info.value) and "already applied: nothing" in str(
            info.value)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("family,kind", [(socket.AF_INET, socket.SOCK_DGRAM),
                                         (socket.AF_UNIX, socket.SOCK_STREAM)])
def test_non_tcp_socket_fails_first_option_and_changes_nothing(family: int, kind: int) -> None:
    with socket.socket(family, kind) as s:
        with pytest.raises(OSError) as info:
            apply_keepalive(s, KeepaliveConfig(10, 5, 3, 1000))
        assert info.value.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
        assert "setting TCP_KEEPIDLE" in str(info.value)
        assert "already applied: nothing" in str(info.value)
        # Nothing changed: SO_KEEPALIVE was not left on behind the error.
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        with pytest.raises(OSError) as info:
            read_keepalive(s)
        assert "reading TCP_KEEPIDLE" in str(info.value)


@pytest.mark.parametrize("bad", [None, "3", 3.0, True, object()])
def test_wrong_socket_type_is_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="socket"):
        apply_keepalive(bad, KeepaliveConfig(10, 5, 3))  # type: ignore[arg-type]  # on purpose


def test_wrong_config_type_is_type_error(tcp_pair: tuple[socket.socket, ...]) -> None:
    with pytest.raises(TypeError, match="KeepaliveConfig"):
        apply_keepalive(tcp_pair[0], (10, 5, 3))  # type: ignore[arg-type]  # not a config


def test_error_names_options_already_applied(tcp_pair: tuple[socket.socket, ...]) -> None:
    # A listening socket takes every keepalive option; shut a connected socket down fully
    # and the options still apply, so force a failure with a descriptor swapped under us:
    # closing between calls is the realistic race, giving EBADF on the first option.
    client, _ = tcp_pair
    fd = os.dup(client.fileno())
    os.close(fd)
    with pytest.raises(OSError, match=r"already applied: nothing"):
        apply_keepalive(fd, KeepaliveConfig(10, 5, 3))


# --- apply_keepalive_many: many sockets in one native crossing


class _Fileno:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_many_sets_every_socket_and_returns_the_unverified_report() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    socks = []
    try:
        for _ in range(20):
            socks.append(socket.create_connection(listener.getsockname()))
            socks.append(listener.accept()[0])
        config = KeepaliveConfig(77, 7, 4, user_timeout_ms=9000)
        targets: list[socket.socket | int | _Fileno] = [
            *socks[:-2], socks[-2].fileno(), _Fileno(socks[-1].fileno())]
        results = pysockopt.apply_keepalive_many(targets, config)
        assert len(results) == len(socks)
        for report in results:
            assert not isinstance(report, OSError)
            assert report.requested == config and report.effective is None
        for sock in socks:  # read back by the stdlib, not by us
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(TCP, socket.TCP_KEEPIDLE) == 77
            assert sock.getsockopt(TCP, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(TCP, socket.TCP_KEEPCNT) == 4
            assert sock.getsockopt(TCP, socket.TCP_USER_TIMEOUT) == 9000
        assert pysockopt.apply_keepalive_many([], config) == []
    finally:
        for s in [*socks, listener]:
            s.close()


def test_many_puts_each_error_in_its_place_and_changes_nothing_else(
    tcp_pair: tuple[socket.socket, ...],
) -> None:
    client, server = tcp_pair
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix_a, unix_b = socket.socketpair()
    read_end, write_end = os.pipe()
    closed = socket.socket()
    closed.close()
    try:
        batch: list[socket.socket | int] = [
            client, udp, unix_a, closed, read_end, -1, server]
        results = pysockopt.apply_keepalive_many(batch, KeepaliveConfig(31, 3, 2))
        assert not isinstance(results[0], OSError) and not isinstance(results[-1], OSError)
        errs = results[1:-1]
        assert all(isinstance(e, OSError) for e in errs)
        codes = [e.errno for e in errs if isinstance(e, OSError)]
        assert codes[0] in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
        assert codes[1] in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
        assert codes[2:] == [errno.EBADF, errno.ENOTSOCK, errno.EBADF]
        assert all("already applied: nothing" in str(e) for e in errs[:2])
        # The UDP socket failed on the first option: SO_KEEPALIVE was never set on it.
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert client.getsockopt(TCP, socket.TCP_KEEPIDLE) == 31
        assert server.getsockopt(TCP, socket.TCP_KEEPIDLE) == 31
    finally:
        for s in (udp, unix_a, unix_b):
            s.close()
        os.close(read_end)
        os.close(write_end)


def test_many_refuses_wrong_types_before_any_syscall(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    with pytest.raises(TypeError) as info:
        pysockopt.apply_keepalive_many([client, "x"],  # type: ignore[list-item]
                                       KeepaliveConfig(55, 5, 5))
    assert "socks[1]" in str(info.value)
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0  # untouched
    with pytest.raises(TypeError):
        pysockopt.apply_keepalive_many([client], (55, 5, 5))  # type: ignore[arg-type]


def test_many_on_a_listener_is_inherited_by_what_it_accepts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        (report,) = pysockopt.apply_keepalive_many([listener], KeepaliveConfig(66, 6, 6))
        assert not isinstance(report, OSError)
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(TCP, socket.TCP_KEEPIDLE) == 66
                assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            del client


# --- dead peers on a real network: two namespaces joined by veth, the peer's link taken down


def _wait_recv_error(sock: socket.socket, limit: float) -> tuple[OSError | None, float]:
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        data = sock.recv(1)
    except OSError as exc:
        return exc, time.monotonic() - start
    raise AssertionError(f"recv returned {data!r} instead of failing")


def _idle_dead_peer_seconds(pair: NetnsPair, port: int, config: KeepaliveConfig) -> float:
    """Seconds from the last traffic until recv() fails with ETIMEDOUT, once b's link is down."""
    with pair.connected(port) as (client, server):
        apply_keepalive(client, config)
        client.sendall(b"x")
        assert server.recv(1) == b"x"
        last_traffic = time.monotonic()
        pair.link_down("b")
        exc, _ = _wait_recv_error(client, 20)
        elapsed = time.monotonic() - last_traffic
        assert isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, exc
        return elapsed


@pytest.mark.root
@pytest.mark.slow
def test_idle_dead_peer_found_by_keepalive(netns_pair: NetnsPair) -> None:
    elapsed = _idle_dead_peer_seconds(netns_pair, 5554, KeepaliveConfig(idle=2, interval=1,
                                                                         count=3))
    assert 4.0 <= elapsed <= 8.0, elapsed


@pytest.mark.root
@pytest.mark.slow
def test_data_in_flight_keepalive_alone_hangs_user_timeout_bounds_it(
    netns_pair: NetnsPair,
) -> None:
    # Keepalive alone: with unacknowledged data the keepalive timer never fires.
    with netns_pair.connected(5555) as (client, _server):
        apply_keepalive(client, KeepaliveConfig(idle=2, interval=1, count=3))
        netns_pair.link_down("b")
        client.send(b"y" * 1000)
        start = time.monotonic()
        readable, _, errored = select.select([client], [], [client], 9.0)
        assert time.monotonic() - start >= 8.5
        assert readable == [] and errored == []
        # (SO_ERROR may hold a soft EHOSTUNREACH from failed neighbour resolution; the
        # connection itself is not failed.)
        state = client.getsockopt(TCP, socket.TCP_INFO, 8)[0]
        assert state == 1  # still ESTABLISHED well past the keepalive detection time (5 s)


# --- CLI


def test_cli_keepalive_shows_host_defaults() -> None:
    code, text = run_cli("keepalive")
    host = system_keepalive()
    assert code == 0
    assert "net.ipv4.tcp_keepalive_time" in text and str(host.idle) in text
    code, text = run_cli("keepalive", "--json")
    assert code == 0
    data = json.loads(text)
    assert data["idle"] == host.idle and data["detection_time"] == host.detection_time


def test_cli_keepalive_detect() -> None:
    code, text = run_cli("keepalive", "--detect", "30", "--json")
    assert code == 0
    data = json.loads(text)
    assert data["detection_time"] == 15 and data["user_timeout_ms"] == 15000
    assert data["worst_case_detection"] == 30
    assert [tuple(x) for x in data["socket_options"]] == (
        KeepaliveConfig.for_detection(30).socket_options())
    code, text = run_cli("keepalive", "--detect", "30")
    assert code == 0 and "apply_keepalive" in text and "idle=9" in text
    assert "within 30 s whatever is written" in text


def test_cli_bad_budget_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli("keepalive", "--detect", "2")
    assert code == 2
    assert "--detect 2: must be" in capsys.readouterr().err


def test_cli_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("no-such-command")[0] == 2
    assert run_cli()[0] == 2


# --- for_detection at the edges of a millisecond budget


def test_worst_case_never_exceeds_a_millisecond_budget() -> None:
    from pysockopt import KeepaliveConfig

    for ms in range(7001, 60001, 3):
        cfg = KeepaliveConfig.for_detection(ms / 1000)
        worst = cfg.worst_case_detection
        assert worst is not None and worst <= ms / 1000, (ms, worst)


def test_the_smallest_budget_the_error_names_is_accepted() -> None:
    from pysockopt import InvalidConfigError, KeepaliveConfig

    with pytest.raises(InvalidConfigError) as info:
        KeepaliveConfig.for_detection(7, count=3)
    assert "7.001" in str(info.value)
    cfg = KeepaliveConfig.for_detection(7.001)  # 7.001 * 1000 is 7000.999... in floats
    assert cfg.worst_case_detection is not None and cfg.worst_case_detection <= 7.001
