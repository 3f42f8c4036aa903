"""``pysockopt watch``: NDJSON when not on a terminal, the live view in a real terminal (tmux)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from netns import NetnsPair
from paced import close_wait_leak
from sockpiles import Pile
from waiting import wait_for

import pysockopt
from pysockopt.cli.watch import BARS, Screen, View, frame, sparkline

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _watch(*args: str) -> list[str]:
    return [sys.executable, "-m", "pysockopt", "watch", *args]


def _state_rows(lines: list[str], state: str) -> list[str]:
    """The per-state rows of a frame for ``state`` (its name, then its count)."""
    return [line for line in lines
            if line.split()[:1] == [state] and line.split()[1].replace(",", "").isdigit()]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), LANG="C.UTF-8")


# --- NDJSON


def test_ndjson_one_object_per_sample_when_not_a_terminal() -> None:
    with Pile() as pile:
        pile.established(2)
        r = subprocess.run(_watch("--count", "3", "--interval", "0.3", "--port", str(pile.port)),
                           capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode in (0, 1), r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and r.stderr == ""
    records = [json.loads(line) for line in lines]
    first, *later = records
    assert first["rates"] is None and first["interval"] is None
    for rec in records:
        assert rec["port"] == pile.port
        assert rec["counts"] == {"ESTABLISHED": 4, "LISTEN": 1}
        assert rec["listeners"][0]["backlog"] == 128
        assert isinstance(rec["counters"]["Tcp"]["ActiveOpens"], int)
    for rec in later:
        assert 0.2 <= rec["interval"] <= 2.0
        assert rec["rates"]["states"]["ESTABLISHED"] == {"delta": 0, "per_second": 0.0}
        assert rec["rates"]["counters"]["Tcp.ActiveOpens"]["delta"] >= 0
    times = [rec["time"] for rec in records]
    assert times == sorted(times)
    # The exit status says whether a problem was seen (host-wide counter rules included).
    problems = any(f["severity"] != "info" for rec in records for f in rec["findings"])
    assert r.returncode == (1 if problems else 0)


def test_ndjson_sees_a_leak_and_exits_1() -> None:
    with Pile() as pile, close_wait_leak(pile):
        r = subprocess.run(_watch("--json", "--count", "4", "--interval", "0.5", "--port",
                                  str(pile.port)),
                           capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(records) == 4
    growing = [f for rec in records for f in rec["findings"] if f["code"] == "CLOSE_WAIT_GROWING"]
    assert growing and growing[0]["port"] == pile.port
    assert all(f["first_seen"] <= rec["wall"] for rec in records for f in rec["findings"])
    counts = [rec["counts"].get("CLOSE_WAIT", 0) for rec in records]
    assert counts == sorted(counts) and counts[-1] > counts[0]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ndjson_is_flushed_per_sample_and_ctrl_c_exits_cleanly() -> None:
    with Pile() as pile:
        # SIGINT as a terminal gives it: default, even where this process ignores it (as a
        # command started with & from a script does, and its children inherit)
        proc = subprocess.Popen(_watch("--interval", "0.3", "--port", str(pile.port)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env(), preexec_fn=_default_sigint)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first = proc.stdout.readline()  # arrives while the command still runs: flushed
            json.loads(first)
            second = proc.stdout.readline()
            assert json.loads(second)["rates"] is not None
            proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, 1) and "Traceback" not in err, err
    for line in rest.splitlines():
        json.loads(line)


def test_bad_arguments_are_usage_errors() -> None:
    for args in (["--count", "0"], ["--interval", "-1"], ["--interval", "x"], ["--port", "x"]):
        r = subprocess.run(_watch(*args), capture_output=True, text=True, env=_env(),
                           timeout=30)
        assert r.returncode == 2 and "usage" in r.stderr, args


# --- the frame, at every size


def _view_of(port: int, samples: int = 3) -> View:
    view = View(0.2, port)
    earlier = None
    for _ in range(samples):
        d = pysockopt.diagnose(port=port, earlier=earlier)
        assert d.sample is not None
        view.update(d, None if earlier is None else d.sample.rates(earlier))
        earlier = d.sample
        time.sleep(0.2)
    return view


def test_sparkline() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == BARS
    assert sparkline([0, 10], 8) == "▁█"
    assert sparkline([5, 5, 5], 8) == "▁▁▁"
    assert sparkline(list(range(100)), 10) == sparkline(list(range(90, 100)), 10)
    assert sparkline([], 4) == ""


def test_frame_fits_and_degrades() -> None:
    with Pile() as pile:
        pile.established(1)
        view = _view_of(pile.port, 2)
        pile.close_wait(4)
        for _ in range(2):
            d = pysockopt.diagnose(port=pile.port, earlier=view.diagnosis.sample
                                   if view.diagnosis else None)
            assert d.sample is not None and view.diagnosis and view.diagnosis.sample
            view.update(d, d.sample.rates(view.diagnosis.sample))
    wide = frame(view, 80, 24)
    text = "\n".join(wide)
    assert len(wide) <= 24 and all(len(line) <= 80 for line in wide)
    assert wide[0].startswith("pysockopt watch") and f"port {pile.port}" in wide[0]
    assert "HISTORY" in text and "CLOSE_WAIT" in text and "FINDINGS" in text
    (row,) = _state_rows(wide, "CLOSE_WAIT")
    assert any(ch in row for ch in BARS[1:]), row  # its count changed: a sparkline
    assert "CLOSE_WAIT OWNER" in text and f"port {pile.port}" in text
    narrow = frame(view, 40, 24)
    assert all(len(line) <= 40 for line in narrow) and "HISTORY" not in "\n".join(narrow)
    tiny = frame(view, 30, 6)
    assert len(tiny) <= 6 and all(len(line) <= 30 for line in tiny)
    assert tiny[0].startswith("pysockopt watch") and any(
        line.startswith("FINDINGS") for line in tiny)
    assert frame(view, 80, 1) == [wide[0]]


def test_screen_redraws_in_place() -> None:
    out = io.StringIO()
    screen = Screen(out)
    screen.open()
    start = len(out.getvalue())
    screen.draw(["one", "two"])
    drawn = out.getvalue()[start:]
    # Home, each line cleared to its end, the rest of the screen cleared: no scrolling,
    # no full clear per frame (that is what flickers).
    assert drawn.startswith("\x1b[H") and drawn.endswith("\x1b[J")
    assert "\x1b[2J" not in drawn and drawn.count("\x1b[K") == 2 and "\n" in drawn
    screen.close()
    assert out.getvalue().endswith("\x1b[?25h\x1b[?1049l")


def test_escapes_in_findings_are_shown_not_run() -> None:
    with Pile() as pile:
        view = _view_of(pile.port, 1)
    assert view.diagnosis is not None
    evil = pysockopt.Finding("X", pysockopt.Severity.WARNING, "bad \x1b[2J name", (), "-")
    view.update(dataclasses.replace(view.diagnosis, findings=(evil,)), None)
    text = "\n".join(frame(view, 80, 24))
    assert "\x1b" not in text and "bad \\x1b[2J name" in text


# --- the live view in a real terminal


@pytest.fixture
def tmux() -> Iterator[tuple[str, pathlib.Path]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/install.sh installs it)")
    sock = f"pso-{uuid.uuid4().hex[:8]}"
    status = pathlib.Path(f"/tmp/{sock}.status")
    yield sock, status
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    status.unlink(missing_ok=True)


def _screen(sock: str) -> list[str]:
    out = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "watch"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.mark.slow
def test_live_view_in_a_terminal(tmux: tuple[str, pathlib.Path]) -> None:
    sock, status = tmux
    with Pile() as pile:
        pile.established(1)
        cmd = (f"cd {ROOT} && PYTHONPATH={ROOT} LANG=C.UTF-8 {sys.executable} -m pysockopt "
               f"watch --interval 0.4 --port {pile.port}; echo exit=$? > {status}; sleep 60")
        subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "watch", "-x", "80",
                        "-y", "24", cmd], check=True, env=_env())
        wait_for(lambda: any(line.startswith("LISTEN") for line in _screen(sock)), 20,
                 "the first frame")
        first = _screen(sock)
        assert first[0].startswith("pysockopt watch") and f"port {pile.port}" in first[0]
        assert any(line.split()[:2] == ["ESTABLISHED", "2"] for line in first), first

        with close_wait_leak(pile):
            def leak_on_screen() -> list[str] | None:
                lines = _screen(sock)
                text = "\n".join(lines)
                rows = _state_rows(lines, "CLOSE_WAIT")
                if ("CLOSE_WAIT_GROWING" in text and rows
                        and any(ch in rows[0] for ch in BARS[1:])):
                    return lines
                return None

            screen = wait_for(leak_on_screen, 20, "CLOSE_WAIT_GROWING and a sparkline")
        assert isinstance(screen, list)
        assert len(screen) <= 24 and all(len(line) <= 80 for line in screen), screen
        text = "\n".join(screen)
        assert "CLOSE_WAIT OWNER" in text and f"port {pile.port}" in text
        (row,) = _state_rows(screen, "CLOSE_WAIT")
        assert int(row.split()[1].replace(",", "")) > 0 and "/s" in row
        # Redrawn in place: the title is on the first line, once.
        assert sum(line.startswith("pysockopt watch") for line in screen) == 1

        # A narrow terminal: no sparklines, nothing wider than the screen.
        subprocess.run(["tmux", "-L", sock, "resize-window", "-t", "watch", "-x", "40",
                        "-y", "12"], check=True)

        def narrow() -> list[str] | None:
            lines = _screen(sock)
            ok = (lines and lines[0].startswith("pysockopt") and "HISTORY" not in "\n".join(
                lines) and all(len(line) <= 40 for line in lines))
            return lines if ok else None

        wait_for(narrow, 10, "the narrow frame")
        subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "watch", "C-c"], check=True)
        wait_for(lambda: status.exists() and status.read_text().strip(), 10, "watch to exit")
        assert status.read_text().strip() == "exit=1"  # a problem was seen
        def summary() -> str:
            text = "\n".join(_screen(sock))
            return text if "problem(s) seen" in text else ""

        after = wait_for(summary, 5, "the summary left on the screen")
        assert "Traceback" not in after and "problem(s) seen" in after
        assert "CLOSE_WAIT_GROWING" in after
        assert "pysockopt watch" in after  # the last frame is left on the normal screen


def test_findings_keep_room_on_a_full_screen() -> None:
    with Pile() as pile:
        pile.established(2)
        pile.close_wait(3)
        view = _view_of(pile.port, 2)
    assert view.diagnosis is not None
    many = tuple(pysockopt.Finding(f"CODE_{i}", pysockopt.Severity.WARNING, f"finding {i}", (),
                                   "-") for i in range(8))
    view.update(dataclasses.replace(view.diagnosis, findings=many), None)
    for height, least in ((24, 6), (12, 2)):
        lines = frame(view, 80, height)
        shown = [line for line in lines if " CODE_" in line]
        assert len(lines) <= height and len(shown) >= least, (height, lines)


# --- other namespaces


def test_ndjson_of_another_namespace_and_of_all(netns_pair: NetnsPair) -> None:
    pile = netns_pair.in_ns("a", lambda: Pile())
    try:
        netns_pair.in_ns("a", lambda: pile.established(3))
        r = subprocess.run(_watch("--netns", netns_pair.a, "--count", "2", "--interval", "0.3"),
                           capture_output=True, text=True, env=_env(), timeout=60)
        assert r.returncode in (0, 1), r.stderr
        records = [json.loads(line) for line in r.stdout.splitlines()]
        assert [rec["counts"] for rec in records] == [{"ESTABLISHED": 6, "LISTEN": 1}] * 2
        assert records[0]["counters"]["Tcp"]["ActiveOpens"] == 3
        r = subprocess.run(_watch("--all-netns", "--count", "2", "--interval", "0.3"),
                           capture_output=True, text=True, env=_env(), timeout=120)
        assert r.returncode in (0, 1), r.stderr
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        ours = [rec for rec in lines if rec["netns"].get("name") == netns_pair.a
                and "counts" in rec]
        assert len(ours) == 2 and ours[1]["rates"] is not None
        assert ours[0]["counts"] == {"ESTABLISHED": 6, "LISTEN": 1}
    finally:
        pile.close()


# --- closes between samples


def test_ndjson_counts_the_closes_between_samples() -> None:
    with Pile() as pile:
        proc = subprocess.Popen(_watch("--json", "--count", "8", "--interval", "0.3",
                                       "--port", str(pile.port)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env())
        assert proc.stdout is not None
        try:
            first = json.loads(proc.stdout.readline())  # subscribed by the first sample
            for client, server in pile.established(3):
                client.close()
                assert server.recv(1) == b""
                server.close()
            rest, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, 1) and err == "", err
    records = [first, *(json.loads(line) for line in rest.splitlines())]
    assert len(records) == 8
    closed = [rec["closed"] for rec in records]
    # The first sample has no interval (its closes are not said); every later one has.
    assert closed[0] is None and all(c is not None for c in closed[1:])
    # Both ends of the three connections, each counted once, under the listener's port.
    assert sum(c["closes"] for c in closed[1:]) == 6
    by = [(row["port"], row["verdict"], row["closes"]) for c in closed[1:]
          for row in c["by_port_verdict"]]
    assert {(p, v) for p, v, _ in by} == {(str(pile.port), "normal")}
    assert sum(n for *_, n in by) == 6
    assert all(c["lost"] == 0 and c["unacked"] == [] for c in closed[1:])
    assert any(c["closes"] and c["per_second"] for c in closed[1:])


def test_the_live_view_shows_the_closes() -> None:
    from pysockopt.host.closed import CloseTotals

    with Pile() as pile:
        view = _view_of(pile.port, samples=2)
    view.closed = CloseTotals(5, {(str(pile.port), "normal"): 4, ("other", "reset"): 1},
                              short_lived={("127.0.0.1", "python3"): 3},
                              unacked_by_port_owner={(str(pile.port), "python3"): 1})
    lines = frame(view, 100, 60)
    assert any(line.startswith("closed: 5 (") and "short-lived 3" in line
               and "unacked 1" in line for line in lines), lines
    assert any(f"port {pile.port}" in line and "normal" in line for line in lines)
    assert "  short-lived -> 127.0.0.1 by python3: 3" in lines


@pytest.mark.root
def test_ndjson_fires_the_rules_on_closes() -> None:
    from closescene import closes_scene
    from netns import have_netns, private_netns

    if have_netns():
        pytest.skip(str(have_netns()))
    with private_netns("pso-wclose") as ns:
        for cmd in (["add", "table", "inet", "pso_closes"],
                    ["add", "chain", "inet", "pso_closes", "in",
                     "{ type filter hook input priority 0 ; }"]):
            subprocess.run(["ip", "netns", "exec", ns, "nft", *cmd], check=True,
                           capture_output=True)
        stop = threading.Event()
        errors: list[BaseException] = []
        scene = threading.Thread(target=closes_scene, args=(ns, stop, errors, 150, 6))
        scene.start()
        try:
            # Default thresholds: 3 connections to one peer given up within a sample, 5
            # with data unacknowledged on one port (each round listens on a new one: 6 a
            # round), 100 short-lived to one address (each connection counted once: 150 a
            # round, a round or more a sample).
            r = subprocess.run(_watch("--json", "--netns", ns, "--count", "5", "--interval",
                                      "5"), capture_output=True, text=True, env=_env(),
                               timeout=180)
        finally:
            stop.set()
            scene.join(60)
    assert not errors, errors
    assert r.returncode == 1, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    codes = {f["code"] for rec in records for f in rec["findings"]}
    assert {"PEERS_DYING", "CLOSED_WITH_UNACKED_DATA", "SHORT_LIVED_CHURN"} <= codes, codes
    assert sum(rec["closed"]["closes"] for rec in records if rec["closed"]) > 0
    assert any(row["verdict"] == "gave_up" for rec in records if rec["closed"]
               for row in rec["closed"]["by_port_verdict"])
