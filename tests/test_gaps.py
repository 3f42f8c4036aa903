"""Behaviour no other test file covered: the netlink -> /proc fallback, LAST_ACK_PILE and
KEEPALIVE_DEFAULTS on real sockets, and beat_at with a time that is not a number."""

from __future__ import annotations

import errno
import importlib
import math
import socket
import subprocess
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from netns import NetnsPair
from waiting import wait_for

import pysockopt
from pysockopt import HeartbeatMonitor, TcpState, Thresholds, diagnose

# The module (the package re-exports its function under the same name, which an import
# statement would find); mypy resolves the import statement to the module itself.
if TYPE_CHECKING:
    import pysockopt.host.connections as conns_module
else:
    conns_module = importlib.import_module("pysockopt.host.connections")


def _codes(d: pysockopt.Diagnosis, code: str) -> list[pysockopt.Finding]:
    return [f for f in d.findings if f.code == code]


# --- the /proc fallback, through the project's own seam (the dump function), not the kernel


@pytest.mark.parametrize("refusal", [errno.EPROTONOSUPPORT, errno.EPERM, errno.EACCES])
def test_a_refused_netlink_dump_falls_back_to_proc(
    monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    held += [listener.accept()[0] for _ in range(3)]
    try:
        from_proc = conns_module.connections(port=port, source="proc")
        calls = []

        def refused(*args: object, **kwargs: object) -> None:
            calls.append(args)
            raise OSError(refusal, "sock_diag refused (seam)")

        monkeypatch.setattr(conns_module, "_dump", refused)
        auto = conns_module.connections(port=port)
        counts = conns_module.state_counts(port=port)
        assert calls, "the seam was not on the path"
        def key(c: pysockopt.Connection) -> tuple[TcpState, str, str]:
            return (c.state, c.local, c.remote)

        assert sorted(map(key, auto)) == sorted(map(key, from_proc))
        assert Counter(c.state for c in auto) == Counter(counts)
        assert counts[TcpState.ESTABLISHED] == 6 and counts[TcpState.LISTEN] == 1
        with pytest.raises(OSError) as forced:
            conns_module.connections(port=port, source="netlink")
        assert forced.value.errno == refusal
    finally:
        for s in [*held, listener]:
            s.close()


def test_an_error_that_is_not_a_refusal_is_not_hidden_by_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EBADMSG, "malformed reply (seam)")

    monkeypatch.setattr(conns_module, "_dump", broken)
    with pytest.raises(OSError) as info:
        conns_module.connections()
    assert info.value.errno == errno.EBADMSG


# --- LAST_ACK_PILE: we closed after the peer did, and the peer vanished before acking


def test_last_ack_pile_after_the_peers_vanish(netns_pair: NetnsPair) -> None:
    n = 4
    listener = netns_pair.socket("b")
    listener.bind((netns_pair.addr_b, 5601))
    listener.listen(16)
    clients = []
    for _ in range(n):
        c = netns_pair.socket("a")
        c.settimeout(5)
        c.connect((netns_pair.addr_b, 5601))
        clients.append(c)
    servers = [listener.accept()[0] for _ in range(n)]
    listener.close()
    try:
        for c in clients:
            c.shutdown(socket.SHUT_WR)  # the peer closes first: our side is CLOSE_WAIT
        def in_b() -> dict[TcpState, int]:
            return netns_pair.in_ns("b", lambda: pysockopt.state_counts(port=5601))

        wait_for(lambda: in_b().get(TcpState.CLOSE_WAIT) == n, what="CLOSE_WAIT on b")
        netns_pair.link_down("a")  # ... and vanishes: our FIN will never be acknowledged
        for s in servers:
            s.close()
        wait_for(lambda: in_b().get(TcpState.LAST_ACK) == n, what="LAST_ACK on b")
        t = Thresholds(last_ack=n)
        (f,) = _codes(netns_pair.in_ns("b", lambda: diagnose(thresholds=t)), "LAST_ACK_PILE")
        ev = {e.name: e.value for e in f.evidence}
        assert ev["last_ack"] == n and f.port == 5601  # orphans: grouped by the local port
        assert not _codes(netns_pair.in_ns("b", lambda: diagnose(
            thresholds=Thresholds(last_ack=n + 1))), "LAST_ACK_PILE")
    finally:
        for c in clients:
            c.close()


# --- KEEPALIVE_DEFAULTS: read from the namespace's own sysctls


def _sysctl(ns: str, name: str, value: int) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{name}={value}"], check=True)


def test_keepalive_defaults_follow_the_namespace_sysctls(netns_pair: NetnsPair) -> None:
    ns = netns_pair.a
    for name, value in (("time", 7200), ("intvl", 75), ("probes", 9)):
        _sysctl(ns, f"net.ipv4.tcp_keepalive_{name}", value)
    (f,) = _codes(netns_pair.in_ns("a", diagnose), "KEEPALIVE_DEFAULTS")
    ev = {e.name: e.value for e in f.evidence}
    assert (ev["tcp_keepalive_time"], ev["tcp_keepalive_intvl"], ev["tcp_keepalive_probes"]) == (
        7200, 75, 9)
    assert ev["detection_s"] == 7200 + 75 * 9
    _sysctl(ns, "net.ipv4.tcp_keepalive_time", 600)
    assert not _codes(netns_pair.in_ns("a", diagnose), "KEEPALIVE_DEFAULTS")
    assert netns_pair.in_ns("a", pysockopt.system_keepalive).idle == 600


# --- beat_at with a time that is not a number


def test_beat_at_refuses_nan_and_non_numbers() -> None:
    now = [100.0]
    m: HeartbeatMonitor[str] = HeartbeatMonitor(10, clock=lambda: now[0])
    m.add("k")
    with pytest.raises(ValueError, match="NaN"):
        m.beat_at("k", math.nan)
    with pytest.raises(TypeError):
        m.beat_at("k", "soon")  # type: ignore[arg-type]  # not a number, on purpose
    assert m.last_beat("k") == 100.0  # nothing changed
    now[0] = 111.0
    assert m.expired() == ["k"]  # and it still expires on time
    m.add("j")
    now[0] = 112.0
    assert m.beat_at("j", math.inf)  # the future counts as now
    assert m.last_beat("j") == 112.0


# --- review findings on the shared helpers


def test_beat_many_at_counts_the_future_as_now_and_skips_non_numbers() -> None:
    now = [0.0]
    m: HeartbeatMonitor[str] = HeartbeatMonitor(5, clock=lambda: now[0])
    for key in "abcd":
        m.add(key)
    now[0] = 1.0
    m.beat_many_at([("a", math.inf), ("b", math.nan), ("c", 1000.0), ("nobody", 0.5)])
    assert m.last_beat("a") == 1.0 and m.last_beat("c") == 1.0  # never past now
    assert m.last_beat("b") == 0.0 and m.stats().unknown_beats == 0
    now[0] = 20.0
    assert sorted(m.expired()) == ["a", "b", "c", "d"] and len(m) == 0


def test_worst_case_never_exceeds_a_millisecond_budget() -> None:
    from pysockopt import KeepaliveConfig

    for ms in range(7001, 60001, 3):
        cfg = KeepaliveConfig.for_detection(ms / 1000)
        worst = cfg.worst_case_detection
        assert worst is not None and worst <= ms / 1000, (ms, worst)


def test_huge_numbers_are_config_errors_not_overflows() -> None:
    from pysockopt import InvalidConfigError

    with pytest.raises(InvalidConfigError):
        HeartbeatMonitor(10**400)


def test_close_now_closes_a_socket_like_object_that_has_a_transport_attribute() -> None:
    from pysockopt.heartbeat import close_now

    a, b = socket.socketpair()

    class Channel:  # e.g. an SSH channel: a socket API with a .transport of its own
        transport = object()

        def shutdown(self, how: int) -> None:
            a.shutdown(how)

        def close(self) -> None:
            a.close()

    close_now(Channel())
    assert a.fileno() == -1 and b.recv(1) == b""
    b.close()


def test_old_import_paths_keep_working_and_keep_the_functions() -> None:
    import subprocess
    import sys

    # In a fresh interpreter: the order of imports is what matters.
    code = (
        "import pysockopt\n"
        "from pysockopt.diagnose import RULES, Thresholds, host_facts\n"
        "from pysockopt.connections import processes_of, parse_state\n"
        "import pysockopt.aio\n"
        "assert callable(pysockopt.diagnose) and callable(pysockopt.connections)\n"
        "assert pysockopt.diagnose.__module__ == 'pysockopt.host.diagnosis'\n"
        "assert RULES and Thresholds() == pysockopt.Thresholds()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_the_smallest_budget_the_error_names_is_accepted() -> None:
    from pysockopt import InvalidConfigError, KeepaliveConfig

    with pytest.raises(InvalidConfigError) as info:
        KeepaliveConfig.for_detection(7, count=3)
    assert "7.001" in str(info.value)
    cfg = KeepaliveConfig.for_detection(7.001)  # 7.001 * 1000 is 7000.999... in floats
    assert cfg.worst_case_detection is not None and cfg.worst_case_detection <= 7.001
