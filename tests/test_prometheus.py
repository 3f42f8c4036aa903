"""pysockopt.prometheus and `pysockopt exporter`, checked by real Prometheus tools.

promtool checks a real scrape and the shipped rules; a real Prometheus server and node_exporter,
started here on loopback inside a private network namespace (so no other process's sockets can
change a count mid-test) and stopped by PID, scrape the exporter.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from helpers import free_port, nlmsg

pytest.importorskip("prometheus_client")  # the test extra installs it

from netns import have_netns, ip, private_netns, run_in_netns
from paced import close_wait_leak
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sockpiles import Pile
from waiting import wait_for

import pysockopt.prometheus as prom
from pysockopt import TcpState, connections, diagnose, state_counts
from pysockopt.host import look
from pysockopt.host.closed import LIFETIME_BUCKETS

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "docs" / "prometheus"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
T = TypeVar("T")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/install.sh installs it)")
    return path


# --- helpers: a private namespace, processes in it, HTTP from inside it


@pytest.fixture
def netns() -> Iterator[str]:
    reason = have_netns()
    if reason:
        pytest.skip(reason)
    with private_netns("pso-prom") as name:
        yield name


@contextlib.contextmanager
def started(cmd: list[str], netns: str | None = None,
            **kw: Any) -> Iterator[subprocess.Popen[str]]:
    """Run ``cmd`` (in ``netns`` through ``ip netns exec``, which execs: same PID); stop it."""
    full = ["ip", "netns", "exec", netns, *cmd] if netns else cmd
    proc = subprocess.Popen(full, text=True, env=ENV, **kw)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def exporter(netns: str | None = None, *args: str) -> Iterator[int]:
    """Start `pysockopt exporter --listen 127.0.0.1:0`; yield the port it prints."""
    cmd = [sys.executable, "-m", "pysockopt", "exporter", "--listen", "127.0.0.1:0", *args]
    with started(cmd, netns, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in line, line
        yield int(line.rsplit(":", 1)[1].split("/")[0])


def http_get(url: str, netns: str | None = None) -> bytes:
    def get() -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                data: bytes = r.read()
                return data
        except urllib.error.HTTPError as err:
            # The error holds the response's socket open until collected: a server that
            # then closes leaves it in CLOSE_WAIT, counted in the test's own scene.
            err.close()
            raise

    return run_in_netns(netns, get) if netns else get()


def in_ns(netns: str, fn: Callable[[], T]) -> T:
    return run_in_netns(netns, fn)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# --- the collector itself


def test_describe_takes_no_scan_and_each_collect_takes_exactly_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = look.scan

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(look, "scan", counting)  # the one place a scrape reads the host
    collector = prom.SocketCollector()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    assert calls == [] and collector.scrapes == 0
    described = {m.name for m in collector.describe()}
    assert described == {m.family for m in prom.METRICS} - {"pysockopt_netns_info"}
    generate_latest(registry)
    assert len(calls) == 1
    generate_latest(registry)
    assert len(calls) == 2 and collector.scrapes == 2


def test_every_metric_exported_is_in_the_table() -> None:
    text = prom.exposition().decode()
    names = {fam.name for fam in text_string_to_metric_families(text)}
    table = {m.family for m in prom.METRICS}
    assert names <= table
    assert {"pysockopt_tcp_sockets", "pysockopt_scrape_duration_seconds",
            "pysockopt_scrape_errors"} <= names
    states = {dict(labels)["state"] for (name, labels) in samples(text)
              if name == "pysockopt_tcp_sockets"}
    assert states == set(prom.STATE_LABELS.values())  # every state, zeros included


def test_bad_collector_options_are_refused() -> None:
    from pysockopt import InvalidConfigError

    bad: list[dict[str, Any]] = [  # Any: some are the wrong type on purpose
        {"ports": [0]}, {"ports": [70000]}, {"ports": ["80"]}, {"top": 0},
        {"ports": list(range(1, 100))}]
    for kw in bad:
        with pytest.raises(InvalidConfigError):
            prom.SocketCollector(**kw)
    with pytest.raises(InvalidConfigError):
        prom.write_textfile("/tmp/not-a-prom-file.txt")


def test_exporter_without_prometheus_client_says_so_and_exits_2() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from pysockopt.cli import main; sys.exit(main(['exporter']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2
    assert r.stderr == ("pysockopt exporter: prometheus_client is not installed: "
                        "pip install 'pysockopt[prometheus]'\n")


def test_per_port_series_count_local_ports_only() -> None:
    with Pile() as pile:
        pile.close_wait(3)
        other = Pile()
        try:
            other.established(2)
            collector = prom.SocketCollector(ports=[pile.port])
            text = generate_latest(_registry(collector)).decode()
        finally:
            other.close()
    got = samples(text)
    p = str(pile.port)
    assert got[("pysockopt_tcp_sockets", (("port", p), ("state", "close_wait")))] == 3
    assert got[("pysockopt_tcp_sockets", (("port", p), ("state", "listen")))] == 1
    # The pile's clients have remote port P but are not on local port P.
    assert got[("pysockopt_tcp_sockets", (("port", p), ("state", "fin_wait2")))] == 0
    assert got[("pysockopt_tcp_sockets", (("port", ""), ("state", "fin_wait2")))] >= 3


def _registry(collector: prom.SocketCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


@pytest.mark.root
def test_host_counters_are_the_samples_counters(netns: str) -> None:
    # A namespace of our own is quiet: its per-namespace counters do not move between the
    # scrape and the Sample's reading of them.
    from pysockopt.host.sample import read_counters

    got = samples(generate_latest(_registry(prom.SocketCollector(netns=netns))).decode())
    c = read_counters(netns)
    want: dict[str, float] = {}
    for table, values, names in (("TcpExt", c.tcp_ext, prom.TCP_EXT_COUNTERS),
                                 ("Tcp", c.tcp, prom.TCP_COUNTERS)):
        want.update({prom.counter_metric(table, n): v for n in names
                     if (v := values[n]) is not None})
    if c.tcp["CurrEstab"] is not None:
        want["pysockopt_netstat_tcp_curr_estab"] = c.tcp["CurrEstab"]
    for key in ("inuse", "tw"):  # the namespace's own (orphan, alloc, mem are the host's)
        if (v := c.sockstat[key]) is not None:
            want[prom.SOCKSTAT_GAUGES[key][0]] = v
    assert want and {name: got.get((name, ())) for name in want} == want
    present = {name for name, _ in got}
    for table, values, names in (("TcpExt", c.tcp_ext, prom.TCP_EXT_COUNTERS),
                                 ("Tcp", c.tcp, prom.TCP_COUNTERS)):
        for n in names:  # absent where the kernel has none
            assert (prom.counter_metric(table, n) in present) == (values[n] is not None)


def _codes(got: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {dict(labels)["code"] for name, labels in got if name == "pysockopt_finding"}


@pytest.mark.slow
def test_time_rules_compare_this_scrape_with_the_last() -> None:
    # A CLOSE_WAIT pile growing at a known pace, below the snapshot threshold: only the
    # interval between two scrapes can tell; the first scrape has no earlier one.
    from pysockopt import Thresholds

    collector = prom.SocketCollector(thresholds=Thresholds(close_wait=10_000))
    registry = _registry(collector)
    with Pile() as pile:
        pile.established(1)
        with close_wait_leak(pile) as leak:  # 10 per second
            wait_for(lambda: leak.done >= 3, 5, "the leak to start")
            first = samples(generate_latest(registry).decode())
            made = leak.done
            wait_for(lambda: leak.done >= made + 10, 10, "ten more leaked")
            second = samples(generate_latest(registry).decode())
    assert "CLOSE_WAIT_GROWING" not in _codes(first)
    assert "CLOSE_WAIT_GROWING" in _codes(second)
    assert ("pysockopt_finding", (("code", "CLOSE_WAIT_GROWING"),
                                  ("severity", "warning"))) in second


def test_a_failed_dump_is_counted_and_its_metrics_left_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any) -> Any:
        raise PermissionError(1, "sock_diag refused")

    collector = prom.SocketCollector()
    registry = _registry(collector)
    first = samples(generate_latest(registry).decode())
    assert first[("pysockopt_scrape_errors_total", ())] == 0
    monkeypatch.setattr(look, "tally", refused)  # the kernel cannot be made to refuse
    for expected in (1, 2):
        got = samples(generate_latest(registry).decode())
        assert got[("pysockopt_scrape_errors_total", ())] == expected
        names = {name for name, _ in got}
        assert "pysockopt_tcp_sockets" not in names and "pysockopt_finding" not in names
        assert "pysockopt_netstat_tcp_active_opens_total" in names  # the rest still there


@pytest.mark.root
def test_keepalive_coverage_counts_what_diagnose_counts(netns: str) -> None:
    from pysockopt import Thresholds

    def scene() -> Pile:
        pile = Pile()
        pairs = pile.established(3)
        for s in pairs[0]:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return pile

    pile = in_ns(netns, scene)
    try:
        def all_idle() -> bool:  # every pair idle for longer than the threshold below
            est = in_ns(netns, lambda: connections(states=TcpState.ESTABLISHED,
                                                   with_info=True))
            ages = [(c.info.last_data_recv, c.info.last_ack_recv) for c in est
                    if c.info is not None]
            return len(est) == len(ages) == 6 and all(
                data is not None and ack is not None and min(data, ack) > 1100
                for data, ack in ages)

        wait_for(all_idle, 10, "the pairs to be idle for over a second")
        t = Thresholds(idle_seconds=1)
        text = in_ns(netns, lambda: prom.exposition(prom.SocketCollector(thresholds=t)))
        findings = in_ns(netns, lambda: diagnose(thresholds=t)).findings
    finally:
        pile.close()
    got = samples(text.decode())
    assert got[("pysockopt_tcp_sockets", (("state", "established"),))] == 6
    assert got[("pysockopt_tcp_established_keepalive_sockets", ())] == 2
    assert got[("pysockopt_tcp_idle_no_keepalive_sockets", ())] == 4
    idle = [f for f in findings if f.code == "IDLE_NO_KEEPALIVE"]
    assert [dict(f.evidence)["connections"] for f in idle] == [4]
    assert got[("pysockopt_finding", (("code", "IDLE_NO_KEEPALIVE"), ("severity", "warning")))] == 1


# --- the C tally, on crafted sock_diag replies (what the kernel would send)


def _diag(state: int, *, timer: int = 0, sport: int = 1000, dst: str = "10.0.0.9",
          dport: int = 80, info: bytes | None = None) -> bytes:
    ident = (struct.pack("!HH", sport, dport) + socket.inet_aton("10.0.0.5") + bytes(12)
             + socket.inet_aton(dst) + bytes(12) + bytes(12))
    msg = struct.pack("=BBBB", socket.AF_INET, state, timer, 0) + ident + bytes(20)
    if info is not None:
        attr = struct.pack("=HH", 4 + len(info), 2) + info  # INET_DIAG_INFO
        msg += attr + bytes(-len(attr) % 4)
    return nlmsg(20, msg, seq=0)


def _tally(messages: list[bytes], **spec: Any) -> dict[str, Any]:
    from pysockopt import Thresholds
    from pysockopt._core import ffi, lib

    data = b"".join(messages) + nlmsg(3, struct.pack("=i", 0), seq=0)
    sink = ffi.new("struct pso_sd_sink *")
    lib.pso_sd_sink_init(sink, 1)
    out = ffi.new("struct pso_tally *")
    try:
        assert lib.pso_sd_parse(data, len(data), sink) == lib.PSO_SD_DONE
        # The predicates come from the rule rows (idle 1 s, 3 retransmits), as a scrape's do.
        s, names = look.tally_spec(Thresholds(idle_seconds=1, retrans=3), 0)
        for key, value in spec.items():
            setattr(s, key, value)
        assert lib.pso_tally(sink, s, out) == 0
        picked = {name: int(out.picked[i]) for i, name in enumerate(names)}
        kept = [(sink.conns[i].state, sink.conns[i].sport) for i in range(sink.nconns)]
        payloads = [bytes(ffi.buffer(sink.info + c.info_off, c.info_len)) if c.info_len
                    else None for c in (sink.conns[i] for i in range(sink.nconns))]
        groups = [(out.groups[i].time_wait, out.groups[i].dport) for i in range(out.ngroups)]
        per_port = {(i, st): int(out.port_counts[i][st]) for i in range(int(spec.get("nports", 0)))
                    for st in range(16) if out.port_counts[i][st]}
        return {"established": int(out.established), "keepalive": picked["keepalive"],
                "idle": picked["IDLE_NO_KEEPALIVE"], "grouped": int(out.tw_grouped),
                "groups": groups, "kept": kept, "per_port": per_port, "payloads": payloads,
                "info_len": int(sink.info_len)}
    finally:
        lib.pso_tally_free(out)
        lib.pso_sd_sink_free(sink)


def _info(last_data_recv: int, last_ack_recv: int, size: int = 104) -> bytes:
    raw = bytearray(size)
    for name, value in (("last_data_recv", last_data_recv), ("last_ack_recv", last_ack_recv)):
        off = look.TCP_INFO_OFFSETS[name]
        if off + 4 <= size:
            raw[off:off + 4] = struct.pack("=I", value)
    return bytes(raw)


def test_tally_counts_idle_keepalive_and_groups_time_wait() -> None:
    est, tw = 1, 6
    got = _tally([
        _diag(est, info=_info(5000, 5000), sport=1),            # idle, no timer: counted, kept
        _diag(est, info=_info(5000, 10), sport=2),              # an ACK came 10 ms ago
        _diag(est, timer=2, info=_info(5000, 5000), sport=3),   # keepalive armed
        _diag(est, info=_info(5000, 5000, size=56), sport=4),   # last_ack_recv not returned
        _diag(est, sport=5),                                     # no tcp_info at all
        _diag(tw, sport=40001, dport=5432), _diag(tw, sport=40002, dport=5432),
        _diag(tw, sport=40003, dport=6379),
        _diag(tw, sport=80, dport=6379),                         # not an ephemeral port
    ], eph_low=40000, eph_high=40999)
    assert (got["established"], got["keepalive"], got["idle"]) == (5, 1, 1)
    assert got["grouped"] == 3 and got["groups"] == [(2, 5432), (1, 6379)]
    assert got["kept"] == [(est, 1)]  # only what a rule reads one by one


def test_tally_keeps_only_the_kept_records_tcp_info() -> None:
    # The blob of tcp_info payloads shrinks to what the kept records point at: the few sockets
    # a rule reads must not hold every socket's tcp_info (280 MB at a million).
    idle, waiting = _info(5000, 5000, size=120), _info(7, 7, size=120)
    got = _tally([
        _diag(1, info=_info(1, 1, size=120), sport=2),  # busy: counted, not kept
        _diag(1, info=idle, sport=1),                   # idle, no timer: kept
        _diag(6, sport=40001),                          # TIME_WAIT: no tcp_info
        _diag(1, info=_info(2, 2, size=120), sport=3),  # busy
        _diag(8, info=waiting, sport=9),                # CLOSE_WAIT: kept (keep_states)
    ], keep_states=1 << 8)
    assert got["kept"] == [(1, 1), (8, 9)]
    assert got["payloads"] == [idle, waiting]
    assert got["info_len"] == 2 * 120


def test_tally_counts_listed_ports_and_keeps_the_asked_states() -> None:
    from pysockopt._core import ffi

    ports = ffi.new("uint16_t[64]", [8080, 9090])
    got = _tally(
        [_diag(8, sport=8080), _diag(8, sport=8080), _diag(1, sport=9090),
         _diag(4, sport=1234)],
        ports=ports, nports=2, keep_states=1 << 8)
    assert got["established"] == 1 and got["grouped"] == 0 and got["groups"] == []
    assert got["kept"] == [(8, 8080), (8, 8080)]
    assert got["per_port"] == {(0, 8): 2, (1, 1): 1}


# --- promtool


def test_promtool_check_metrics_passes_on_a_real_scrape() -> None:
    promtool = _tool("promtool")
    with Pile() as pile:
        pile.close_wait(2)
        with exporter(None, "--ports", str(pile.port)) as port:
            body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert b"pysockopt_tcp_sockets" in body
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = _tool("promtool")
    r = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 rules found" in r.stdout
    r = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = (RULES_DIR / "alerts.yml").read_text()
    tests = (RULES_DIR / "alerts_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines()
              if line.strip().startswith("- alert:")]
    assert len(alerts) == 6
    for alert in alerts:
        assert f"alertname: {alert}" in tests, alert


# --- findings: the cheap path says what diagnose() says


@pytest.mark.root
def test_findings_are_those_diagnose_finds(netns: str) -> None:
    def scene() -> list[Pile]:
        leak = Pile()
        leak.close_wait(12)                # CLOSE_WAIT_PILE
        full = Pile(backlog=1)
        full.unaccepted(3)                 # ACCEPT_QUEUE_FULL (and maybe LISTEN_DROPS)
        return [leak, full]

    piles = in_ns(netns, scene)
    try:
        full = piles[1]
        wait_for(lambda: in_ns(netns, lambda: [c.rqueue for c in connections(
            states=TcpState.LISTEN, port=full.port)]) == [2], 5, "the full accept queue")
        expected = {(f.code, f.severity.label) for f in in_ns(netns, diagnose).findings}
        text = in_ns(netns, lambda: prom.exposition().decode())
    finally:
        for p in piles:
            p.close()
    got = {(dict(labels)["code"], dict(labels)["severity"])
           for (name, labels) in samples(text) if name == "pysockopt_finding"}
    assert {"CLOSE_WAIT_PILE", "ACCEPT_QUEUE_FULL"} <= {code for code, _ in expected}
    assert got == expected
    # This process holds the 12 CLOSE_WAIT sockets: its command name owns them.
    comm = pathlib.Path("/proc/self/comm").read_text().strip()
    owners = {dict(labels)["owner"]: v for (name, labels), v in samples(text).items()
              if name == "pysockopt_tcp_close_wait_owner_sockets"}
    assert owners == {comm: 12}


@pytest.mark.root
def test_time_wait_pressure_found_as_diagnose_finds_it(netns: str) -> None:
    # 60 TIME_WAIT sockets to one destination hold 60% of a 100-port range: the finding
    # comes from the C grouping here, from every socket in diagnose().
    for key, value in (("ip_local_port_range", "40000 40099"), ("tcp_tw_reuse", "0")):
        subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q",
                        f"net.ipv4.{key}={value}"], check=True)

    def scene() -> None:
        with Pile() as pile:
            pile.time_wait(60)

    in_ns(netns, scene)
    expected = {(f.code, f.severity.label) for f in in_ns(netns, diagnose).findings}
    text = in_ns(netns, lambda: prom.exposition().decode())
    got = {(dict(labels)["code"], dict(labels)["severity"])
           for (name, labels) in samples(text) if name == "pysockopt_finding"}
    assert ("TIME_WAIT_PRESSURE", "warning") in expected
    assert got == expected
    tw = {dict(labels)["destination"]: v for (name, labels), v in samples(text).items()
          if name == "pysockopt_tcp_time_wait_destination_sockets"}
    assert list(tw.values()) == [60.0]
    assert samples(text)[("pysockopt_tcp_ephemeral_ports", ())] == 100


# --- other namespaces


@pytest.fixture
def netns2(netns: str) -> Iterator[str]:
    with private_netns("pso-prom") as name:
        yield name


@pytest.mark.root
def test_a_collector_for_another_namespace_reads_it_from_inside(netns: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q",
                    "net.ipv4.ip_local_port_range=40000 40099"], check=True)
    pile = in_ns(netns, Pile)
    try:
        in_ns(netns, lambda: pile.close_wait(4))
        got = samples(prom.exposition(prom.SocketCollector(netns=netns)).decode())
        truth = in_ns(netns, state_counts)
    finally:
        pile.close()
    assert got[("pysockopt_tcp_sockets", (("state", "close_wait"),))] == 4
    assert got[("pysockopt_tcp_sockets", (("state", "listen"),))] == truth[TcpState.LISTEN] == 1
    assert got[("pysockopt_tcp_ephemeral_ports", ())] == 100  # that namespace's sysctl
    assert got[("pysockopt_tcp_close_wait_owner_sockets", (
        ("owner", pathlib.Path("/proc/self/comm").read_text().strip()),))] == 4


@pytest.mark.root
def test_all_netns_labels_every_series_with_its_namespace(netns: str, netns2: str) -> None:
    promtool = shutil.which("promtool")
    piles = []
    try:
        for name, n in ((netns, 3), (netns2, 5)):
            # The same address and port in both: the netns label keeps the series apart.
            pile = in_ns(name, lambda: Pile(port=5000))
            piles.append(pile)
            in_ns(name, lambda: pile.close_wait(n))  # noqa: B023  # called at once
        body = prom.exposition(prom.SocketCollector(all_netns=True))
    finally:
        for p in piles:
            p.close()
    got = samples(body.decode())
    for name, n in ((netns, 3), (netns2, 5)):
        assert got[("pysockopt_tcp_sockets", (("netns", name), ("state", "close_wait")))] == n
        assert got[("pysockopt_tcp_listen_queue_length", (
            ("address", "127.0.0.1"), ("netns", name), ("port", "5000")))] == 0
        info = [labels for (metric, labels) in got if metric == "pysockopt_netns_info"
                and dict(labels)["netns"] == name]
        assert len(info) == 1
    assert ("pysockopt_scrape_duration_seconds", ()) in got  # once, without a netns
    if promtool is not None:
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        assert r.returncode == 0, r.stdout + r.stderr


# --- a real Prometheus and node_exporter


PROM_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pysockopt
    static_configs: [{targets: ["127.0.0.1:%d"]}]
  - job_name: node
    static_configs: [{targets: ["127.0.0.1:%d"]}]
"""


def _query(netns: str, prom_port: int, expr: str) -> list[dict[str, Any]]:
    url = (f"http://127.0.0.1:{prom_port}/api/v1/query?"
           + urllib.parse.urlencode({"query": expr}))
    try:
        data = json.loads(http_get(url, netns))
    except OSError:
        return []  # not listening yet
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _states(text: str, name: str) -> dict[str, float]:
    return {dict(labels)["state"]: v for (n, labels), v in samples(text).items() if n == name}


#: States that HTTP scrapes themselves move: each scrape is an ESTABLISHED pair while it runs,
#: and leaves a TIME_WAIT (and for a moment a CLOSE_WAIT/FIN_WAIT2 pair) when it closes.
MOVING = ("established", "time_wait")
#: States a scrape's own connection passes through for an instant as it opens or closes (the
#: exporter now closes each served connection at once): one may be caught by one scrape and not
#: the other, so they are not compared.
PASSING = ("syn_sent", "syn_recv", "fin_wait1", "last_ack", "closing")


def _scrape_scene(netns: str, prom_port: int, server: subprocess.Popen[str], exp_port: int,
                  node_port: int, full_port: int) -> tuple[dict[str, float], dict[str, float]]:
    truth = in_ns(netns, state_counts)
    queue = in_ns(netns, lambda: [c.rqueue for c in connections(
        states=TcpState.LISTEN, port=full_port)])
    assert truth.get(TcpState.CLOSE_WAIT) == 7 and queue == [3]
    seen: list[object] = []

    def close_wait_matches() -> bool:
        assert server.poll() is None, "prometheus exited"
        got = _query(netns, prom_port, 'pysockopt_tcp_sockets{state="close_wait"}')
        now = in_ns(netns, lambda: connections(states=TcpState.CLOSE_WAIT))
        seen.append((got, [(c.local_port, c.remote_port) for c in now]))
        # A scrape's own connection may sit in CLOSE_WAIT for a moment: poll until the value
        # Prometheus stored is what the kernel says (7 plus nothing in flight).
        return [float(r["value"][1]) for r in got] == [float(len(now))] and len(now) == 7

    try:
        wait_for(close_wait_matches, 60, "Prometheus to store the exporter's CLOSE_WAIT count")
    except AssertionError:
        ss = in_ns(netns, lambda: subprocess.run(["ss", "-tanpo", "state", "close-wait"],
                                                 capture_output=True, text=True).stdout)
        raise AssertionError(f"last answers (Prometheus, CLOSE_WAIT local/remote ports): "
                             f"{seen[-3:]}\n{ss}") from None

    listen = _query(netns, prom_port, f'pysockopt_tcp_listen_queue_length{{port="{full_port}"}}')
    assert [float(r["value"][1]) for r in listen] == [3.0]
    backlog = _query(netns, prom_port, f'pysockopt_tcp_listen_backlog{{port="{full_port}"}}')
    assert [float(r["value"][1]) for r in backlog] == [2.0]
    wait_for(lambda: _query(netns, prom_port, "node_tcp_connection_states"), 30,
             "Prometheus's first scrape of node_exporter")

    # The same scene side by side: node_exporter, pysockopt, node_exporter again; a triple
    # where node_exporter's two answers agree (but for MOVING) had nothing change around ours.
    node_url = f"http://127.0.0.1:{node_port}/metrics"
    ours_url = f"http://127.0.0.1:{exp_port}/metrics"
    for _ in range(30):
        before = _states(http_get(node_url, netns).decode(), "node_tcp_connection_states")
        ours = _states(http_get(ours_url, netns).decode(), "pysockopt_tcp_sockets")
        after = _states(http_get(node_url, netns).decode(), "node_tcp_connection_states")
        if all(before.get(k) == after.get(k) for k in set(before) | set(after)
               if k not in MOVING and not k.endswith("_bytes")):
            return after, ours
    raise AssertionError("the scene never stood still for three scrapes")


@pytest.mark.root
@pytest.mark.slow
def test_prometheus_scrapes_the_scene_and_node_exporter_agrees(netns: str) -> None:
    prometheus = _tool("prometheus")
    node_exporter = _tool("prometheus-node-exporter")

    def scene() -> list[Pile]:
        leak = Pile()
        leak.close_wait(7)
        full = Pile(backlog=2)
        full.unaccepted(3)
        return [leak, full]

    piles = in_ns(netns, scene)
    full = piles[1]
    node_port, prom_port = 19100, 19090  # inside the test's own namespace: nobody else's
    try:
        with exporter(netns) as exp_port, tempfile.TemporaryDirectory() as tmp, \
                started([node_exporter, "--collector.disable-defaults", "--collector.tcpstat",
                         f"--web.listen-address=127.0.0.1:{node_port}"], netns,
                        stderr=subprocess.DEVNULL):
            pathlib.Path(tmp, "prometheus.yml").write_text(PROM_CONFIG % (exp_port, node_port))
            with started([prometheus, f"--config.file={tmp}/prometheus.yml",
                          f"--storage.tsdb.path={tmp}/data",
                          f"--web.listen-address=127.0.0.1:{prom_port}"], netns,
                         stderr=subprocess.DEVNULL) as server:
                theirs, ours = _scrape_scene(netns, prom_port, server, exp_port,
                                                 node_port, full.port)
    finally:
        for p in piles:
            p.close()
    # node_exporter adds byte sums as pseudo-states and leaves out states with no socket.
    assert {"rx_queued_bytes", "tx_queued_bytes"} <= set(theirs)
    assert set(ours) == set(prom.STATE_LABELS.values())
    for state in prom.STATE_LABELS.values():
        if state not in MOVING and state not in PASSING:
            assert ours[state] == theirs.get(state, 0.0), (state, ours, theirs)
    assert ours["close_wait"] >= 7 and ours["fin_wait2"] >= 7
    assert ours["listen"] == theirs["listen"] >= 5  # 2 piles, exporter, node_exporter, prom
    for state in MOVING:  # both see the scrapes' own connections
        assert ours[state] > 0 and theirs[state] > 0


# --- the textfile


@pytest.mark.slow  # 40 host-wide collections racing a reader thread: 2.5 to 4 s, once 34 s
def test_textfile_is_written_atomically_and_read_by_node_exporter() -> None:
    node_exporter = _tool("prometheus-node-exporter")
    last = prom.METRICS[-1].name
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "pysockopt.prom")
        prom.write_textfile(path)
        stop = threading.Event()
        bad: list[str] = []
        reads = [0]

        def reader() -> None:
            while not stop.is_set():
                text = path.read_text()
                reads[0] += 1
                # A whole file: it ends with its last metric and a newline.
                if not text.endswith("\n") or f"\n{last} " not in text:
                    bad.append(text[-200:])

        t = threading.Thread(target=reader)
        t.start()
        try:
            collector = prom.SocketCollector()
            for _ in range(40):
                prom.write_textfile(path, collector)
        finally:
            stop.set()
            t.join()
        assert reads[0] > 0 and bad == []
        assert sorted(os.listdir(tmp)) == ["pysockopt.prom"]  # no temporary file left
        assert path.stat().st_mode & 0o777 == 0o644

        port = free_port()
        with started([node_exporter, "--collector.disable-defaults", "--collector.textfile",
                      f"--collector.textfile.directory={tmp}",
                      f"--web.listen-address=127.0.0.1:{port}"], None,
                     stderr=subprocess.DEVNULL):
            def scrape() -> str:
                try:
                    return http_get(f"http://127.0.0.1:{port}/metrics").decode()
                except OSError:
                    return ""

            text = wait_for(scrape, 20, "node_exporter")
    assert isinstance(text, str)
    got = samples(text)
    assert got[("node_textfile_scrape_error", ())] == 0
    assert any(name == "pysockopt_tcp_sockets" for name, _ in got)


def test_textfile_cli_once_and_interval_needs_textfile(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "pysockopt.prom"
    r = subprocess.run([sys.executable, "-m", "pysockopt", "exporter", "--textfile",
                        str(target)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "pysockopt_tcp_sockets{" in target.read_text()
    r = subprocess.run([sys.executable, "-m", "pysockopt", "exporter", "--interval", "1"],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "interval" in r.stderr


# --- cardinality


@pytest.mark.root
@pytest.mark.slow
def test_series_stay_bounded_with_10000_remote_endpoints(netns: str) -> None:
    n = 10_000

    def scene() -> int:
        # The server closes first: it keeps one TIME_WAIT per client endpoint (10,000
        # distinct remote endpoints), on its listening port, which is ephemeral (bound to 0).
        # Each client has an address of its own (127.1.x.y): a client port reused towards
        # the same server would end that server-side TIME_WAIT early.
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        addr = listener.getsockname()
        done = 0
        while done < n:
            k = min(1000, n - done)
            clients = []
            for i in range(done, done + k):
                c = socket.socket()
                c.bind((f"127.1.{i // 250}.{i % 250 + 1}", 0))
                c.setblocking(False)
                c.connect_ex(addr)
                clients.append(c)
            servers = [listener.accept()[0] for _ in range(k)]
            for s in servers:
                s.close()
            for c in clients:
                c.setblocking(True)
                c.recv(1)
                c.close()
            done += k
        listener.close()
        return int(addr[1])

    port = in_ns(netns, scene)
    top = 5
    text = in_ns(netns, lambda: prom.exposition(prom.SocketCollector(top=top)).decode())
    got = samples(text)
    tw = {dict(labels)["destination"]: v for (name, labels), v in got.items()
          if name == "pysockopt_tcp_time_wait_destination_sockets"}
    counted = in_ns(netns, state_counts).get(TcpState.TIME_WAIT, 0)
    assert counted >= n - 100  # a few may have expired on a very slow machine
    assert len(tw) == top + 1 and sum(tw.values()) == pytest.approx(counted, abs=100)
    assert tw["other"] >= counted - top - 100
    assert all(d.startswith("127.1.") for d in tw if d != "other")  # the clients
    assert port > 0
    # Fixed families (states, counters, sockstat, scrape) + 3 per listener + top+1 + findings,
    # + 15 of the closed-connection log (4 totals, the lifetime histogram's 9 buckets, count
    # and sum; the closes per port and verdict: none in this collector's life).
    print(f"series with {counted} TIME_WAIT to distinct endpoints: {len(got)}")
    assert len(got) < 75, len(got)  # 74 here: none of it grows with the endpoints


# --- review fixes: a recreated namespace, CLI edges, host-wide series, one read per scan


ERRORS = ("pysockopt_scrape_errors_total", ())


@pytest.mark.root
def test_a_collector_for_a_named_namespace_follows_it_when_it_is_recreated(netns: str) -> None:
    collector = prom.SocketCollector(netns=netns)
    registry = _registry(collector)
    first = samples(generate_latest(registry).decode())
    assert first[ERRORS] == 0
    subprocess.run(["ip", "netns", "del", netns], check=True)
    gone = samples(generate_latest(registry).decode())  # no exception: a failed part
    assert gone[ERRORS] == 1
    assert ("pysockopt_scrape_duration_seconds", ()) in gone
    assert not any(name == "pysockopt_tcp_sockets" for name, _ in gone)
    ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    pile = in_ns(netns, Pile)
    try:
        in_ns(netns, lambda: pile.close_wait(2))
        again = samples(generate_latest(registry).decode())
    finally:
        pile.close()
    assert again[ERRORS] == 1  # counted once, and the new namespace is the one looked at
    assert again[("pysockopt_tcp_sockets", (("state", "close_wait"),))] == 2


@pytest.mark.root
def test_exporter_textfile_loop_survives_a_recreated_namespace_and_a_lost_directory(
        netns: str, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "textfile"
    directory.mkdir()
    target = directory / "pysockopt.prom"
    errlog = tmp_path / "stderr"

    def value(name: str) -> float | None:
        try:
            return samples(target.read_text()).get((name, ()))
        except (OSError, ValueError):
            return None

    with errlog.open("w") as err, started(
            [sys.executable, "-m", "pysockopt", "exporter", "--netns", netns,
             "--textfile", str(target), "--interval", "0.1"], None, stderr=err) as proc:
        wait_for(lambda: value("pysockopt_scrape_errors_total") == 0, 20, "the first file")
        subprocess.run(["ip", "netns", "del", netns], check=True)
        wait_for(lambda: (value("pysockopt_scrape_errors_total") or 0) >= 1, 20,
                 "a scrape error for the deleted namespace")
        ip("netns", "add", netns)
        last = value("pysockopt_scrape_errors_total")
        wait_for(lambda: value("pysockopt_tcp_sockets") is None and samples(
            target.read_text()).get(("pysockopt_tcp_sockets", (("state", "listen"),)))
            == 0 and value("pysockopt_scrape_errors_total") == last, 20,
            "scrapes of the recreated namespace")
        # Gone in one step (a rename), then removed: an rmtree in place races the loop's
        # next temporary file on a busy host (rmdir: directory not empty).
        lost = tmp_path / "lost"
        directory.rename(lost)

        def removed() -> bool:
            shutil.rmtree(lost, ignore_errors=True)
            return not lost.exists()

        wait_for(removed, 20, "the lost directory removed")
        wait_for(lambda: str(target) in errlog.read_text(), 20, "a failed write said")
        directory.mkdir()
        wait_for(lambda: (value("pysockopt_scrape_errors_total") or 0) > (last or 0), 20,
                 "the loop to go on writing after the failed write")
        assert proc.poll() is None
    assert proc.returncode == 0
    text = errlog.read_text()
    assert "Traceback" not in text and ".tmp" not in text, text


def test_exporter_usage_errors_speak_in_options() -> None:
    from pysockopt.cli import main

    cases = [
        (["--top", "0"], "--top 0: must be 1..100"),
        (["--ports", "80,x"], "--ports 80,x: "),
        (["--textfile", "/tmp/x.txt"], "--textfile /tmp/x.txt: must end in .prom"),
        (["--netns", "/etc/passwd"], "--netns /etc/passwd: not a network namespace"),
        (["--textfile", "/tmp/x.prom", "--interval", "inf"], "--interval inf: must be"),
        (["--textfile", "/tmp/x.prom", "--interval", "0"], "--interval 0: must be"),
        (["--interval", "5"], "--interval needs --textfile"),
        (["--listen", "nowhere"], "--listen nowhere: "),
        (["--textfile", "/nonexistent/x.prom"], "/nonexistent/x.prom"),
    ]
    for argv, message in cases:
        r = subprocess.run([sys.executable, "-m", "pysockopt", "exporter", *argv],
                           capture_output=True, text=True, env=ENV, timeout=60)
        assert r.returncode == 2 and message in r.stderr, (argv, r.stderr)
        assert "out of range" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert ".tmp" not in r.stderr and r.stdout == "", r.stderr
    assert callable(main)


def test_an_unexpected_error_in_a_command_is_exit_2_in_one_escaped_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pysockopt.cli import main

    def boom(*args: Any, **kw: Any) -> None:
        raise RuntimeError("broken \x1b[31mred\nsecond line")

    monkeypatch.setattr(prom, "write_textfile", boom)  # nothing in the kernel fails so
    status = main(["exporter", "--textfile", str(tmp_path / "x.prom")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "\x1b" not in err and "RuntimeError" in err, err


@pytest.mark.root
def test_host_wide_sockstat_and_conntrack_limit_are_exported_once_with_all_netns(
        netns: str) -> None:
    got = samples(prom.exposition(prom.SocketCollector(all_netns=True)).decode())
    host_wide = {m.name for m in prom.METRICS if m.host_wide}
    assert {"pysockopt_sockstat_tcp_orphan", "pysockopt_sockstat_tcp_alloc",
            "pysockopt_sockstat_tcp_mem_bytes", "pysockopt_nf_conntrack_entries_limit"} \
        == host_wide
    for name, labels in got:
        if name in host_wide:
            assert labels == (), (name, labels)  # one series, no netns label
    assert ("pysockopt_sockstat_tcp_alloc", ()) in got
    per_ns = [dict(labels)["netns"] for name, labels in got
              if name == "pysockopt_sockstat_tcp_inuse"]
    assert netns in per_ns and len(per_ns) == len(set(per_ns)) >= 2


def test_the_collector_uses_only_public_names_of_the_listing() -> None:
    import ast

    tree = ast.parse(pathlib.Path(prom.__file__).read_text())
    private = [(node.module, a.name) for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module
               and node.module.startswith("host")
               for a in node.names if a.name.startswith("_")]
    assert private == []
    assert not hasattr(prom, "_sockstat")  # /proc parsing lives in pysockopt._host


def test_one_scan_reads_the_port_range_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    path = "/proc/sys/net/ipv4/ip_local_port_range"
    opened = []
    real = builtins.open

    def counting(file: Any, *args: Any, **kw: Any) -> Any:
        if file == path:
            opened.append(file)
        return real(file, *args, **kw)

    collector = prom.SocketCollector()
    monkeypatch.setattr(builtins, "open", counting)
    prom.exposition(collector)
    assert len(opened) == 1


@pytest.mark.root
def test_one_scan_opens_the_namespace_once(netns: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    collector = prom.SocketCollector(netns=netns)
    path = f"/run/netns/{netns}"
    opened = []
    real = os.open

    def counting(file: Any, *args: Any, **kw: Any) -> Any:
        if file == path:
            opened.append(file)
        return real(file, *args, **kw)

    monkeypatch.setattr(os, "open", counting)
    prom.exposition(collector)
    assert len(opened) == 1


@pytest.mark.root
def test_a_namespace_named_with_terminal_escapes_is_said_escaped(
        tmp_path: pathlib.Path) -> None:
    if have_netns():
        pytest.skip(str(have_netns()))
    name = f"pso-esc\x1b[31m-{uuid.uuid4().hex[:8]}"
    target = tmp_path / "pysockopt.prom"
    errlog = tmp_path / "stderr"
    ip("netns", "add", name)
    try:
        with errlog.open("w") as err, started(
                [sys.executable, "-m", "pysockopt", "exporter", "--netns", name,
                 "--textfile", str(target), "--interval", "0.1"], None, stderr=err):
            wait_for(target.exists, 20, "the first file")
            subprocess.run(["ip", "netns", "del", name], check=True)
            wait_for(lambda: "scrape error" in errlog.read_text(), 20, "the error said")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    text = errlog.read_text()
    assert "\x1b" not in text and "pso-esc\\x1b[31m-" in text, text
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text


# --- the closed-connection log in the exporter


def _closes_in(netns: str, listener: socket.socket, n: int, size: int = 100) -> None:
    """Open and plainly close ``n`` connections to ``listener``, ``size`` bytes each way."""
    def run() -> None:
        for _ in range(n):
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            client.sendall(b"q" * size)
            assert server.recv(size, socket.MSG_WAITALL) == b"q" * size
            server.sendall(b"a" * size)
            assert client.recv(size, socket.MSG_WAITALL) == b"a" * size
            client.close()
            assert server.recv(1) == b""
            server.close()
    in_ns(netns, run)


def _closed(got: dict[tuple[str, tuple[tuple[str, str], ...]], float],
            ) -> dict[tuple[str, str], float]:
    return {(dict(labels)["port"], dict(labels)["verdict"]): v for (name, labels), v in got.items()
            if name == "pysockopt_tcp_closed_connections_total"}


@pytest.mark.root
def test_a_scrape_after_real_closes_counts_them_by_port_and_verdict(netns: str) -> None:
    listener = in_ns(netns, lambda: socket.create_server(("127.0.0.1", 0)))
    try:
        port = str(listener.getsockname()[1])
        registry = _registry(prom.SocketCollector(netns=netns))
        first = samples(generate_latest(registry).decode())  # opens the log: nothing yet
        assert _closed(first) == {}
        assert first[("pysockopt_tcp_close_events_lost_total", ())] == 0
        _closes_in(netns, listener, 3)
        got = wait_for(lambda: (lambda g: g if sum(_closed(g).values()) >= 6 else None)(
            samples(generate_latest(registry).decode())), timeout=60, what="6 closes")
        # Both ends of each connection, under the listener's port; nothing else closed there.
        assert _closed(got) == {(port, "normal"): 6}
        assert got[("pysockopt_tcp_closed_bytes_received_total", ())] >= 600
        assert got[("pysockopt_tcp_closed_bytes_acked_total", ())] >= 600
        assert got[("pysockopt_tcp_closed_retransmits_total", ())] == 0
        assert got[("pysockopt_tcp_close_events_lost_total", ())] == 0
        # The histogram: once a look has run, each close has a lifetime (a bound at least).
        def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            _closes_in(netns, listener, 1)
            g = samples(generate_latest(registry).decode())
            return g if g[("pysockopt_tcp_connection_lifetime_seconds_count", ())] else None
        got = wait_for(counted, timeout=120, what="closes with a lifetime")
        count = got[("pysockopt_tcp_connection_lifetime_seconds_count", ())]
        assert got[("pysockopt_tcp_connection_lifetime_seconds_bucket", (("le", "+Inf"),))] \
            == count
        assert count <= sum(_closed(got).values())
        assert got[("pysockopt_tcp_connection_lifetime_seconds_sum", ())] >= 0
        buckets = [v for (name, _), v in got.items()
                   if name == "pysockopt_tcp_connection_lifetime_seconds_bucket"]
        assert len(buckets) == len(LIFETIME_BUCKETS)
    finally:
        listener.close()


@pytest.mark.root
def test_closed_connection_series_are_bounded_by_ports_and_verdicts(netns: str) -> None:
    kept = in_ns(netns, lambda: socket.create_server(("127.0.0.1", 0)))
    # A service that restarts between two scrapes: a scrape saw its listener, and the
    # listener and its connections are gone by the next one: still counted under its port.
    restarted = in_ns(netns, lambda: socket.create_server(("127.0.0.1", 0)))
    again = str(restarted.getsockname()[1])
    try:
        listed = 40000 + os.getpid() % 20000  # a --ports entry nothing uses
        registry = _registry(prom.SocketCollector(netns=netns, ports=[listed]))
        generate_latest(registry)
        # A listener no scrape sees: its closes count as "other".
        gone = in_ns(netns, lambda: socket.create_server(("127.0.0.1", 0)))
        _closes_in(netns, kept, 2)
        _closes_in(netns, gone, 2)
        _closes_in(netns, restarted, 2)
        gone.close()
        restarted.close()
        got = wait_for(lambda: (lambda g: g if sum(_closed(g).values()) >= 14 else None)(
            samples(generate_latest(registry).decode())), timeout=60, what="14 closes")
        series = _closed(got)
        ports = {str(kept.getsockname()[1]), str(listed), again}
        assert {p for p, _ in series} == {str(kept.getsockname()[1]), again, "other"}
        assert {v for _, v in series} <= set(prom.VERDICTS)
        assert len(series) <= (len(ports) + 1) * len(prom.VERDICTS)
        assert series[(str(kept.getsockname()[1]), "normal")] == 4
        assert series[(again, "normal")] == 4
        assert series[("other", "normal")] == 4
    finally:
        kept.close()
        restarted.close()


@pytest.mark.root
def test_closes_on_more_ports_than_labels_count_as_other(netns: str) -> None:
    # More listeners than the port labels allowed: each listener's closes count under its
    # own port until CLOSE_PORTS labels are used, then under "other"; the series stay bounded.
    n = prom.CLOSE_PORTS + 6
    listeners = in_ns(netns, lambda: [socket.create_server(("127.0.0.1", 0))
                                      for _ in range(n)])
    try:
        registry = _registry(prom.SocketCollector(netns=netns))
        generate_latest(registry)  # the log subscribes on this scrape's way in
        for listener in listeners:
            _closes_in(netns, listener, 1)
        got = wait_for(lambda: (lambda g: g if sum(_closed(g).values()) >= 2 * n else None)(
            samples(generate_latest(registry).decode())), timeout=60, what=f"{2 * n} closes")
    finally:
        for listener in listeners:
            listener.close()
    series = _closed(got)
    ports = {p for p, _ in series}
    assert sum(series.values()) == 2 * n
    assert len(ports - {"other"}) == prom.CLOSE_PORTS, sorted(ports)
    assert series[("other", "normal")] == 2 * (n - prom.CLOSE_PORTS)
    assert len(series) <= (prom.CLOSE_PORTS + 1) * len(prom.VERDICTS)


@pytest.mark.root
def test_reset_and_normal_closes_are_counted_by_their_verdicts(netns: str) -> None:
    listener = in_ns(netns, lambda: socket.create_server(("127.0.0.1", 0)))
    try:
        port = str(listener.getsockname()[1])
        registry = _registry(prom.SocketCollector(netns=netns))
        generate_latest(registry)

        def reset() -> None:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            client.sendall(b"q" * 100)
            server.recv(100, socket.MSG_WAITALL)
            # SO_LINGER 0: the client resets (tcp_disconnect), the server receives the RST.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            wait_for(lambda: pysockopt_state(server) == TcpState.CLOSE, 10, "the RST")
            server.close()

        for _ in range(2):
            in_ns(netns, reset)
        _closes_in(netns, listener, 3)
        got = wait_for(lambda: (lambda g: g if sum(_closed(g).values()) >= 10 else None)(
            samples(generate_latest(registry).decode())), timeout=60, what="10 closes")
    finally:
        listener.close()
    # The resetting clients count under "other": tcp_disconnect zeroed their remote port
    # (what the kernel announces), and their local one is ephemeral.
    assert _closed(got) == {(port, "reset"): 2, ("other", "reset"): 2,
                            (port, "normal"): 6}, _closed(got)
    assert got[("pysockopt_tcp_close_events_lost_total", ())] == 0


def pysockopt_state(sock: socket.socket) -> TcpState | None:
    from pysockopt import tcp_info

    return tcp_info(sock).state


@pytest.mark.root
def test_all_netns_follows_a_namespace_that_appears_and_drops_it_when_deleted() -> None:
    if have_netns():
        pytest.skip(str(have_netns()))

    collector = prom.SocketCollector(all_netns=True)
    registry = _registry(collector)

    def followed() -> tuple[int, ...]:
        # The inodes of the namespaces whose subscriber the collector keeps (other work's
        # namespaces come and go on a shared host: only ours is asserted on).
        assert collector._feed is not None
        return collector._feed.netns

    try:
        generate_latest(registry)
        name = f"pso-cl-{uuid.uuid4().hex[:8]}"
        ip("netns", "add", name)
        try:
            ip("-n", name, "link", "set", "lo", "up")
            inode = os.stat(f"/run/netns/{name}").st_ino
            assert inode not in followed()
            generate_latest(registry)  # its first scan: subscribed on the way in
            assert inode in followed()
            listener = in_ns(name, lambda: socket.create_server(("127.0.0.1", 0)))
            try:
                port = str(listener.getsockname()[1])
                generate_latest(registry)
                _closes_in(name, listener, 2)
                got = wait_for(lambda: (lambda g: g if _closed(g).get((port, "normal"), 0)
                                        >= 4 else None)(samples(generate_latest(registry)
                                                                .decode())),
                               timeout=60, what="the new namespace's closes")
            finally:
                listener.close()
        finally:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        assert _closed(got)[(port, "normal")] >= 4
        # Deleted: its next scrape no longer scans it, and its subscriber is closed.
        wait_for(lambda: (generate_latest(registry), inode not in followed())[1], timeout=30,
                 what="the deleted namespace's subscriber closed")
    finally:
        collector.close()
