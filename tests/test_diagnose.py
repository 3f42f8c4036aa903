from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from netns import NetnsPair, _ip
from sockpiles import Pile, send_syns, wait_for

import pysockopt
from pysockopt import (
    Diagnosis,
    Finding,
    InvalidConfigError,
    KeepaliveConfig,
    Severity,
    TcpState,
    Thresholds,
    apply_keepalive,
    diagnose,
)
from pysockopt._diagnose_doc import DOC
from pysockopt.cli import main
from pysockopt.diagnose import RULES, rules_markdown


def _found(d: Diagnosis, code: str) -> list[Finding]:
    return [f for f in d.findings if f.code == code]


def _evidence(f: Finding) -> dict[str, object]:
    return {e.name: e.value for e in f.evidence}


def _comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


# --- loopback situations (each on its own kernel-chosen port)


def test_close_wait_pile_names_the_leaking_process() -> None:
    with Pile() as pile:
        pile.close_wait(12)
        d = diagnose(port=pile.port)
        (f,) = _found(d, "CLOSE_WAIT_PILE")
        assert f.severity == Severity.WARNING and f.port == pile.port
        assert _evidence(f)["close_wait"] == 12
        assert pysockopt.Process(os.getpid(), _comm()) in f.processes
        assert f"12 CLOSE_WAIT sockets on local port {pile.port}" in f.summary
        assert not d.ok and f in d.problems
        assert d.counts[TcpState.CLOSE_WAIT] == 12 and d.counts[TcpState.FIN_WAIT2] == 12
        # Below the threshold it is not reported; a lower threshold finds it again.
        assert not _found(diagnose(port=pile.port, thresholds=Thresholds(close_wait=13)),
                          "CLOSE_WAIT_PILE")


def test_full_accept_queue_and_listener_drops() -> None:
    with Pile(backlog=2) as pile:
        pile.unaccepted(8)  # nobody ever calls accept()

        def full() -> list[Finding]:
            d = diagnose(port=pile.port)
            return _found(d, "ACCEPT_QUEUE_FULL") and _found(d, "LISTEN_DROPS")

        wait_for(full, 10, "a full accept queue with drops")
        d = diagnose(port=pile.port)
        (f,) = _found(d, "ACCEPT_QUEUE_FULL")
        ev = _evidence(f)
        # The kernel lets the queue hold backlog + 1 before it drops.
        assert ev["backlog"] == 2 and ev["accept_queue"] == 3
        assert f.severity == Severity.CRITICAL and d.findings[0].severity == Severity.CRITICAL
        assert pysockopt.Process(os.getpid(), _comm()) in f.processes
        (drops,) = _found(d, "LISTEN_DROPS")
        assert isinstance(_evidence(drops)["drops"], int) and _evidence(drops)["drops"] >= 1


def test_half_open_suspects_are_idle_sockets_without_keepalive() -> None:
    with Pile() as pile:
        (client, server), = pile.established(1)
        time.sleep(1.3)
        t = Thresholds(idle_seconds=1)
        (f,) = _found(diagnose(port=pile.port, thresholds=t), "IDLE_NO_KEEPALIVE")
        assert _evidence(f)["connections"] == 2
        assert not _found(diagnose(port=pile.port), "IDLE_NO_KEEPALIVE")  # 1800 s default
        config = KeepaliveConfig(60, 10, 3)
        apply_keepalive(client, config)
        apply_keepalive(server, config)
        assert not _found(diagnose(port=pile.port, thresholds=t), "IDLE_NO_KEEPALIVE")


def test_quiet_port_has_no_problems() -> None:
    with Pile() as pile:
        pile.established(2)
        d = diagnose(port=pile.port)
        assert d.ok and d.problems == () and d.total == 5
        assert all(f.severity == Severity.INFO for f in d.findings)
        assert "No problems found." in d.render()


# --- situations in private network namespaces


def test_time_wait_pressure_against_the_port_range(netns_pair: NetnsPair) -> None:
    def inside() -> Diagnosis:
        with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
            f.write("40000 40199")  # 200 ephemeral ports in this namespace only
        with Pile() as pile:
            pile.time_wait(130)
            return diagnose()

    d = netns_pair.in_ns("a", inside)
    (f,) = _found(d, "TIME_WAIT_PRESSURE")
    ev = _evidence(f)
    assert ev["time_wait"] == 130 and ev["ephemeral_ports"] == 200 and ev["ratio"] == 0.65
    assert ev["ip_local_port_range"] == "40000-40199"
    assert f.severity == Severity.WARNING and "127.0.0.1:" in f.summary
    assert d.host.ip_local_port_range == (40000, 40199)


def test_retransmitting_to_a_vanished_peer(netns_pair: NetnsPair) -> None:
    with netns_pair.connected(5557) as (client, _server):
        client.send(b"x" * 2000)
        netns_pair.link_down("b")
        client.send(b"y" * 1000)  # in flight, never acknowledged

        def found() -> list[Finding]:
            return _found(netns_pair.in_ns("a", diagnose), "RETRANSMITTING")

        (f,) = wait_for(found, 15, "RETRANSMITTING")  # RTOs 0.2 + 0.4 + 0.8 s ...
        ev = _evidence(f)
        assert ev["retrans_max"] >= 3 and ev["connections"] == 1
        assert netns_pair.addr_b in f.summary and ev["unacked_bytes"] >= 1000
        assert pysockopt.Process(os.getpid(), _comm()) in f.processes
        # Closing with data still unacknowledged leaves it in FIN_WAIT1.
        client.close()
        t = Thresholds(fin_wait1=1)
        (fw,) = wait_for(lambda: _found(netns_pair.in_ns("a", lambda: diagnose(thresholds=t)),
                                        "FIN_WAIT1_PILE"), 5, "FIN_WAIT1")
        assert _evidence(fw)["fin_wait1"] == 1 and _evidence(fw)["unsent_bytes"] >= 1000


def test_syn_recv_pile_from_a_syn_flood(netns_pair: NetnsPair) -> None:
    subnet = netns_pair.addr_a.rsplit(".", 1)[0]
    # Spoofed sources live behind namespace a, which does not forward: SYN+ACKs to them
    # vanish there without a reply, as in a real flood.
    _ip("-n", netns_pair.b, "route", "add", f"{subnet}.64/26", "via", netns_pair.addr_a)
    sources = [f"{subnet}.{i}" for i in range(65, 127)]

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind((netns_pair.addr_b, 6000))
        s.listen(512)
        return s

    listener = netns_pair.in_ns("b", listen)
    try:
        netns_pair.in_ns("a", lambda: send_syns(sources, netns_pair.addr_b, 6000, 150))

        def found() -> list[Finding]:
            return _found(netns_pair.in_ns("b", lambda: diagnose(port=6000)), "SYN_RECV_PILE")

        (f,) = wait_for(found, 10, "SYN_RECV_PILE")
        ev = _evidence(f)
        assert ev["syn_recv"] == 150 and ev["remote_addresses"] == len(sources)
        assert ev["backlog"] == 512 and ev["tcp_syncookies"] in (0, 1, 2)
        assert f.port == 6000 and f.severity == Severity.WARNING
        counts = netns_pair.in_ns("b", lambda: pysockopt.state_counts(port=6000))
        assert counts == {TcpState.LISTEN: 1, TcpState.SYN_RECV: 150}
        proc = netns_pair.in_ns("b", lambda: pysockopt.state_counts(port=6000, source="proc"))
        assert proc == counts
    finally:
        listener.close()


def test_cli_exit_status_follows_findings(netns_pair: NetnsPair) -> None:
    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        return main(["diagnose", *args], out=out), out.getvalue()

    # A fresh namespace: nothing worse than INFO -> 0.
    status, text = netns_pair.in_ns("a", lambda: run())
    assert status == 0, text

    def leak() -> tuple[int, str, int, str]:
        pile = Pile()
        pile.close_wait(11)
        try:
            s1, t1 = run()
            s2, t2 = run("--json")
            return s1, t1, s2, t2
        finally:
            pile.close()

    s1, human, s2, js = netns_pair.in_ns("a", leak)
    assert s1 == 1 and "CLOSE_WAIT_PILE" in human and "held by" in human
    assert s2 == 1
    data = json.loads(js)
    assert data["ok"] is False
    (f,) = [f for f in data["findings"] if f["code"] == "CLOSE_WAIT_PILE"]
    assert f["evidence"]["close_wait"] == 11 and f["processes"][0]["pid"] == os.getpid()


def test_cli_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


def test_console_script_runs_as_a_module() -> None:
    r = subprocess.run([sys.executable, "-m", "pysockopt", "diagnose", "--port", "1", "--json"],
                       capture_output=True, text=True, cwd=DOC.parent.parent)
    assert r.returncode in (0, 1), r.stderr
    assert "findings" in json.loads(r.stdout)


# --- the rules as data, and their generated doc


def test_docs_are_generated_from_the_rules() -> None:
    assert DOC.read_text(encoding="utf-8") == rules_markdown(), (
        "docs/diagnose.md is stale: run python -m pysockopt._diagnose_doc")


def test_rules_are_complete_and_consistent() -> None:
    codes = [r.code for r in RULES]
    assert len(codes) == len(set(codes))
    names = {f.name for f in dataclasses.fields(Thresholds)}
    used = {r.threshold for r in RULES if r.threshold}
    assert used == names  # every threshold belongs to a rule, every rule's field exists
    doc = rules_markdown()
    for r in RULES:
        assert f"## {r.code}" in doc and r.advice in doc


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Thresholds)])
def test_thresholds_reject_non_positive(field: str) -> None:
    with pytest.raises(InvalidConfigError, match=field):
        Thresholds(**{field: 0})


def test_diagnosis_json_is_serializable() -> None:
    with Pile() as pile:
        pile.close_wait(10)
        d = diagnose(port=pile.port)
        data = json.loads(json.dumps(d.as_dict()))
        assert data["counts"]["CLOSE_WAIT"] == 10 and data["port"] == pile.port
        assert data["host"]["ip_local_port_range"] is not None
