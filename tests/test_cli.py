from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest
from helpers import cli_argv, run_cli_err
from sockpiles import Pile
from waiting import wait_for

import pysockopt
from pysockopt import KeepaliveConfig, Severity, Thresholds, Timer, apply_keepalive, diagnose
from pysockopt._format import ss_duration

ROOT = pathlib.Path(__file__).resolve().parent.parent

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def test_closed_pipe_is_not_an_error() -> None:
    # `pysockopt errno --list | head -1`: the reader goes away after one line. The pipe is
    # shrunk to one page so the writer really meets the closed end.
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(cli_argv("errno", "--list"), stdout=write_fd,
                            stderr=subprocess.PIPE)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        first = reader.readline()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, err
    assert first.strip() and b"Broken pipe" not in err and b"Traceback" not in err


def test_python_m_and_help() -> None:
    out = subprocess.run(cli_argv("--help"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "keepalive" in out.stdout and "errno" in out.stdout
    out = subprocess.run(cli_argv("--version"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("pysockopt ")
    out = subprocess.run(cli_argv("keepalive", "--bogus"), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "usage" in out.stderr


# --- exit status survives the reader going away (issue: BrokenPipeError replaced it)


def _closed_reader(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run pysockopt with stdout a pipe whose reader is already gone (as in `| true`)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        return subprocess.run(cli_argv(*args), stdout=write_fd, stderr=subprocess.PIPE,
                              timeout=60)
    finally:
        os.close(write_fd)


def test_a_gone_reader_keeps_the_decided_status() -> None:
    with Pile() as pile:
        pile.close_wait(12)
        found = _closed_reader("diagnose", "--port", str(pile.port))
        assert found.returncode == 1, found.stderr
    unknown = _closed_reader("errno", "99999")
    assert unknown.returncode == 2, unknown.stderr
    listed = _closed_reader("errno", "--list")
    assert listed.returncode == 0, listed.stderr
    for r in (found, unknown, listed):
        assert b"Traceback" not in r.stderr and b"Exception ignored" not in r.stderr


def test_closed_stdout_is_an_error_without_traceback() -> None:
    r = subprocess.run(["bash", "-c", 'exec "$@" >&-', "-", *cli_argv("states")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pysockopt states: cannot write the output: standard output is closed" in r.stderr


def test_output_error_other_than_a_gone_reader_is_exit_2() -> None:
    with open("/dev/full", "w") as full:
        r = subprocess.run(cli_argv("errno", "104"), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert r.returncode == 2 and "No space left on device" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# --- errno's search and arguments


def test_errno_search_that_matches_nothing_says_so() -> None:
    assert run_cli_err("errno", "--search", "zzz") == (1, "no errno matches 'zzz'\n", "")
    status, out, _ = run_cli_err("errno", "--search", "zzz", "--json")
    assert status == 1 and json.loads(out) == []
    for blank in ("", "   "):
        status, out, err = run_cli_err("errno", "--search", blank)
        assert status == 2 and out == "" and "--search" in err and "word" in err


def test_errno_takes_padded_numbers_and_points_words_to_search() -> None:
    status, out, _ = run_cli_err("errno", " 104")
    assert status == 0 and out.startswith("ECONNRESET (104)")
    status, out, err = run_cli_err("errno", "Connection reset by peer")
    assert status == 2
    assert "pysockopt errno --search 'Connection reset by peer'" in err


@pytest.mark.slow  # seven interpreter starts: about 3.5 s
def test_every_command_documents_its_exit_status() -> None:
    top = subprocess.run(cli_argv("--help"), capture_output=True, text=True, timeout=30)
    assert "0 nothing found, 1 problems found, 2 error" in top.stdout
    for name in ("keepalive", "errno", "states", "conns", "diagnose"):
        r = subprocess.run(cli_argv(name, "--help"), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and "Exit status:" in r.stdout, name
    errno_help = subprocess.run(cli_argv("errno", "--help"), capture_output=True,
                                text=True, timeout=30).stdout
    assert "1 --search matched nothing (like grep)" in " ".join(errno_help.split())


# --- errors in the command line's own words


def test_usage_errors_speak_in_options() -> None:
    cases = [
        (["diagnose", "--port", "70000"], "--port 70000: must be 0..65535"),
        (["states", "--port", "-1"], "--port -1: must be 0..65535"),
        (["conns", "--port", "x"], "--port x: not a number"),
        (["conns", "--state", "nonsense"], "unknown state 'nonsense' (one of: ESTABLISHED,"),
        (["keepalive", "--count", "5"], "--count needs --detect"),
        (["keepalive", "--detect", "2"], "--detect 2: must be at least 3 s with 1 probe"),
        (["keepalive", "--detect", "5", "--count", "3"],
         "--detect 5: must be at least 7.001 s with 3 probes"),
        (["keepalive", "--user-timeout", "2"], "--user-timeout needs --detect"),
        (["keepalive", "--detect", "10", "--user-timeout", "6"],
         "--user-timeout: must be 1..5 s for --detect 10"),
        (["keepalive", "--detect", "10", "--user-timeout", "0"],
         "--user-timeout 0: must be a number of seconds > 0"),
        (["keepalive", "--detect", "30", "--count", "0"], "--count 0: must be at least 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["diagnose", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "give a COMMAND"),
    ]
    for argv, message in cases:
        status, out, err = run_cli_err(*argv)
        assert status == 2 and message in err, (argv, err)
        assert "out of range" not in err and out == ""


# --- tables like ss


def test_timers_print_like_ss(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = tcp_pair
    apply_keepalive(client, KeepaliveConfig(7200, 75, 9))
    port, peer = client.getsockname()[1], client.getpeername()[1]

    def both() -> list[str] | None:
        status, out, _ = run_cli_err("conns", "--port", str(port))
        assert status == 0
        ours = [ln.split()[-1] for ln in out.splitlines()
                if ln.split()[3:5] == [f"127.0.0.1:{port}", f"127.0.0.1:{peer}"]]
        ss = subprocess.run(["ss", "-tanoH", f"( sport = :{port} and dport = :{peer} )"],
                            capture_output=True, text=True, check=True).stdout
        theirs = [w.removeprefix("timer:(").replace(",", "(", 1) for w in ss.split()
                  if w.startswith("timer:(")]
        # Read a moment apart: on the 120min mark one may say 120min, the other 119min.
        return ours if ours and ours == theirs else None

    ours = wait_for(both, 5, "pysockopt conns and ss showing the same timer")
    assert ours[0].startswith("keepalive(119min,") or ours[0].startswith("keepalive(120min,")
    assert [ss_duration(ms) for ms in (7_140_000, 65_500, 9_501, 12_000, 476, 0, 600_000)] == [
        "119min", "1min5sec", "9.501sec", "12sec", "476ms", "0ms", "10min"]


def test_listener_rows_leave_peer_columns_empty() -> None:
    with Pile() as pile:
        pile.established(1)
        status, out, _ = run_cli_err("conns", "-i", "--port", str(pile.port))
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert status == 0 and rows["LISTEN"][-4:] == ["-", "-", "-", "-"]
    assert rows["ESTABLISHED"][-4] != "-"  # a connection has an rtt


def test_counts_of_one_are_singular() -> None:
    with Pile() as pile:
        d = diagnose(port=pile.port)
        assert d.render().startswith(f"1 TCP socket on port {pile.port}: LISTEN 1\n")
        pile.close_wait(1)
        (f,) = [f for f in diagnose(port=pile.port, thresholds=Thresholds(close_wait=1))
                .findings if f.code == "CLOSE_WAIT_PILE"]
        assert f.summary.startswith(f"1 CLOSE_WAIT socket on local port {pile.port}")
    status, out, _ = run_cli_err("keepalive", "--detect", "30", "--count", "1")
    assert status == 0 and "then 1 probe " in out and "1 probes" not in out


def test_keepalive_detect_user_timeout_and_a_small_budget() -> None:
    status, out, _ = run_cli_err("keepalive", "--detect", "20", "--user-timeout", "4", "--json")
    assert status == 0
    shown = json.loads(out)
    want = KeepaliveConfig.for_detection(20, user_timeout=4)
    assert shown["user_timeout_ms"] == want.user_timeout_ms == 4000
    assert (shown["idle"], shown["interval"], shown["count"]) == (
        want.idle, want.interval, want.count)
    status, out, _ = run_cli_err("keepalive", "--detect", "20", "--user-timeout", "4")
    assert status == 0 and "for_detection(20, user_timeout=4)" in out
    # 5 s: as many probes as fit (one), not the refusal of three
    status, out, _ = run_cli_err("keepalive", "--detect", "5")
    assert status == 0 and "for_detection(5)\n" in out and "then 1 probe " in out


# --- enums print as names


def test_enums_print_their_names(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    info = pysockopt.tcp_info(tcp_pair[0])
    assert str(info.state) == "ESTABLISHED" and f"{info.state}" == "ESTABLISHED"
    assert str(Severity.WARNING) == "WARNING" and f"{Severity.CRITICAL}" == "CRITICAL"
    assert str(Timer.KEEPALIVE) == "KEEPALIVE" and f"{Timer.NONE}" == "NONE"
    warning: int = Severity.WARNING  # an int where an int is expected
    assert info.state == 1 and warning == 1  # still the kernel's numbers


# --- a source folder without the built extension


def test_source_folder_without_extension_says_why_and_what_to_do(
        tmp_path: pathlib.Path) -> None:
    # A fresh clone, `pip install .`, then Python run from the clone: the folder wins over
    # the installed package, and it has no built pysockopt._native.
    shutil.copytree(ROOT / "pysockopt", tmp_path / "pysockopt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (tmp_path / "setup.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for code in ("import pysockopt", "import pysockopt.tcpinfo"):
        # -S: no site-packages, so nothing installed can provide the extension instead.
        r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=30)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 1 and last.startswith("ImportError: "), r.stderr
        assert "not built" in last and "source folder" in last and "pip install -e ." in last
        assert "another folder" in last and str(tmp_path) in last


def test_source_folder_without_extension_never_borrows_another_trees(
        tmp_path: pathlib.Path) -> None:
    # An editable install of another checkout (`pip install -e` there) puts a finder on
    # sys.meta_path that maps the package to that checkout: a submodule this folder lacks,
    # such as the unbuilt pysockopt._native, was then silently imported from there.
    editable = pytest.importorskip("setuptools.command.editable_wheel")
    template = getattr(editable, "_finder_template", None)
    if template is None:
        pytest.skip("this setuptools writes its editable finder differently")
    finder = tmp_path / "finder"
    finder.mkdir()
    (finder / "other_checkout_finder.py").write_text(
        template("pysockopt", {"pysockopt": str(ROOT / "pysockopt")}, {}))
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "pysockopt", clone / "pysockopt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (clone / "setup.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # cffi's backend, from its own folder: the other tree's extension would load for real.
    backend = importlib.util.find_spec("_cffi_backend")
    assert backend is not None and backend.origin is not None
    cffi_dir = os.path.dirname(backend.origin)
    setup = (f"import sys; sys.path += [{str(finder)!r}, {cffi_dir!r}]; "
             "import other_checkout_finder; other_checkout_finder.install(); ")
    for code in ("import pysockopt", "import pysockopt.tcpinfo"):
        # -S: only the finder written here, not whatever this interpreter has installed.
        r = subprocess.run([sys.executable, "-S", "-c", setup + code], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (r.stdout, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: "), r.stderr
        assert str(clone / "pysockopt") in last and str(ROOT / "pysockopt") in last
        assert "not built" in last and "build_ext --inplace" in last


# --- issue 19: output errors without PYTHONUNBUFFERED, one line per socket, one errno rule


def _buffered_env() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: stdout is block-buffered, as on most hosts."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("args", [("errno", "104"), ("keepalive",),
                                  ("keepalive", "--detect", "10"), ("errno", "--list")])
def test_a_full_disk_is_exit_2_without_pythonunbuffered(args: tuple[str, ...]) -> None:
    # Issue 19 item 9: the output sat in Python's buffer, main() returned 2, then the flush
    # at exit failed and the status became 120 with "Exception ignored" on stderr.
    with open("/dev/full", "w") as full:
        r = subprocess.run(cli_argv(*args), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60, env=_buffered_env())
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "cannot write the output: No space left on device" in r.stderr
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("query", ["99999", "EFOO"])
def test_an_unknown_errno_number_or_name_follows_one_rule(query: str) -> None:
    # Issue 19 item 11: an unknown number was explained on stdout (status 2) while an unknown
    # name was an error on stderr. One rule for both: stderr, status 2, nothing on stdout;
    # --json still gives its record (known: false) on stdout.
    status, out, err = run_cli_err("errno", query)
    assert status == 2 and out == "", out
    assert err.startswith("pysockopt errno: ") and query in err and err.count("\n") == 1, err
    status, out, err = run_cli_err("errno", query, "--json")
    assert status == 2 and json.loads(out)["known"] is False and query in err
    status, out, err = run_cli_err("errno", "104", query)
    assert status == 2 and out.startswith("ECONNRESET (104)") and query not in out
