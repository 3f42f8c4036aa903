from __future__ import annotations

import copy
import errno
import io
import json
import os
import pickle
import select
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import NetnsPair

import pysockopt
from pysockopt import (
    InvalidConfigError,
    KeepaliveConfig,
    apply_keepalive,
    read_keepalive,
    system_keepalive,
)
from pysockopt.cli import main
from pysockopt.keepalive import LIMITS

TCP = socket.IPPROTO_TCP


# --- validation


@given(st.integers(1, 32767), st.integers(1, 32767), st.integers(1, 127),
       st.none() | st.integers(0, 2**31 - 1))
def test_in_range_values_are_accepted(idle: int, interval: int, count: int,
                                      uto: int | None) -> None:
    c = KeepaliveConfig(idle, interval, count, uto)
    assert (c.idle, c.interval, c.count, c.user_timeout_ms) == (idle, interval, count, uto)
    assert c.detection_time == idle + interval * count


@pytest.mark.parametrize("field", ["idle", "interval", "count", "user_timeout_ms"])
@given(data=st.data())
def test_out_of_range_values_name_field_value_and_range(field: str, data: st.DataObject) -> None:
    low, high = LIMITS[field]
    bad = data.draw(st.integers(max_value=low - 1) | st.integers(min_value=high + 1))
    kwargs = {"idle": 10, "interval": 5, "count": 3, "user_timeout_ms": None, field: bad}
    with pytest.raises(InvalidConfigError) as info:
        KeepaliveConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert info.value.field == field and info.value.value == bad
    assert f"{field}={bad}" in str(info.value) and f"{low}..{high}" in str(info.value)


@pytest.mark.parametrize("value", [1.5, 2.0, True, "5", None])
def test_non_int_seconds_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError) as info:
        KeepaliveConfig(value, 5, 3)  # type: ignore[arg-type]
    assert "idle" in str(info.value)
    if isinstance(value, float):
        assert "one-second granularity" in str(info.value)


def test_config_is_frozen_hashable_and_picklable() -> None:
    c = KeepaliveConfig(10, 5, 3, 25000)
    with pytest.raises(AttributeError):
        c.idle = 3  # type: ignore[misc]
    assert c == KeepaliveConfig(10, 5, 3, 25000) and hash(c) == hash(KeepaliveConfig(10, 5, 3,
                                                                                  25000))
    assert pickle.loads(pickle.dumps(c)) == c
    assert copy.deepcopy(c) == c


@given(st.integers(4, 200_000), st.integers(1, 127))
def test_for_detection_meets_budget(seconds: int, count: int) -> None:
    if seconds < count + 1 or seconds > 32767 + 32767 * count:
        with pytest.raises(InvalidConfigError):
            KeepaliveConfig.for_detection(seconds, count=count)
        return
    c = KeepaliveConfig.for_detection(seconds, count=count)
    assert c.count == count
    assert c.detection_time <= seconds
    assert c.user_timeout_ms is not None and 0 < c.user_timeout_ms <= seconds * 1000
    # It uses the budget: nothing is thrown away beyond what whole seconds force.
    assert c.detection_time >= min(seconds, 32767 + 32767 * count) - count


def test_for_detection_examples() -> None:
    assert KeepaliveConfig.for_detection(30) == KeepaliveConfig(15, 5, 3, 30000)
    assert KeepaliveConfig.for_detection(10.9).detection_time <= 10
    with pytest.raises(InvalidConfigError, match="seconds=3"):
        KeepaliveConfig.for_detection(3)
    with pytest.raises(TypeError):
        KeepaliveConfig.for_detection("30")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError):
        KeepaliveConfig.for_detection(float("nan"))


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
        apply_keepalive(bad, KeepaliveConfig(10, 5, 3))  # type: ignore[arg-type]


def test_wrong_config_type_is_type_error(tcp_pair: tuple[socket.socket, ...]) -> None:
    with pytest.raises(TypeError, match="KeepaliveConfig"):
        apply_keepalive(tcp_pair[0], (10, 5, 3))  # type: ignore[arg-type]


def test_error_names_options_already_applied(tcp_pair: tuple[socket.socket, ...]) -> None:
    # A listening socket takes every keepalive option; shut a connected socket down fully
    # and the options still apply, so force a failure with a descriptor swapped under us:
    # closing between calls is the realistic race, giving EBADF on the first option.
    client, _ = tcp_pair
    fd = os.dup(client.fileno())
    os.close(fd)
    with pytest.raises(OSError, match=r"already applied: nothing"):
        apply_keepalive(fd, KeepaliveConfig(10, 5, 3))


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


@pytest.mark.root
@pytest.mark.slow
def test_data_in_flight_fails_within_user_timeout(netns_pair: NetnsPair) -> None:
    with netns_pair.connected(5556) as (client, _server):
        apply_keepalive(client, KeepaliveConfig(idle=2, interval=1, count=3,
                                                user_timeout_ms=3000))
        netns_pair.link_down("b")
        start = time.monotonic()
        client.send(b"z" * 1000)
        exc, _ = _wait_recv_error(client, 20)
        elapsed = time.monotonic() - start
        assert isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, exc
        # The retransmission timer checks the user timeout when it fires, so the drop lands
        # at the first RTO expiry past 3 s (about 3.2 to 5 s with RTO backing off from 200 ms).
        assert 2.8 <= elapsed <= 6.5, elapsed


# --- CLI


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out)
    return code, out.getvalue()


def test_cli_keepalive_shows_host_defaults() -> None:
    code, text = _run("keepalive")
    host = system_keepalive()
    assert code == 0
    assert "net.ipv4.tcp_keepalive_time" in text and str(host.idle) in text
    code, text = _run("keepalive", "--json")
    assert code == 0
    data = json.loads(text)
    assert data["idle"] == host.idle and data["detection_time"] == host.detection_time


def test_cli_keepalive_detect() -> None:
    code, text = _run("keepalive", "--detect", "30", "--json")
    assert code == 0
    data = json.loads(text)
    assert data["detection_time"] <= 30 and data["user_timeout_ms"] == 30000
    assert [tuple(x) for x in data["socket_options"]] == (
        KeepaliveConfig.for_detection(30).socket_options())
    code, text = _run("keepalive", "--detect", "30")
    assert code == 0 and "apply_keepalive" in text and "idle=15" in text


def test_cli_bad_budget_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _run("keepalive", "--detect", "2")
    assert code == 2
    assert "seconds=2" in capsys.readouterr().err


def test_cli_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("no-such-command")[0] == 2
    assert _run()[0] == 2


@pytest.mark.root
@pytest.mark.slow
def test_for_detection_budget_holds_on_a_real_dead_peer(netns_pair: NetnsPair) -> None:
    config = KeepaliveConfig.for_detection(6)  # idle 3 + 3 probes x 1 s, user timeout 6 s
    elapsed = _idle_dead_peer_seconds(netns_pair, 5557, config)
    # With TCP_USER_TIMEOUT set the keepalive timer aborts at its first run at or past the
    # user timeout: the last probe's slot (6 s), or one interval later when the timer runs a
    # jiffy early.
    assert 5.0 <= elapsed <= 7.0 + 0.5, elapsed
