"""The exporter as a fleet runs it (docs/deploy.md): least privilege, and the Grafana dashboard.

Least privilege: the exporter runs as uid 65534 (nobody) with exactly the ambient
capabilities docs/deploy.md names, set by setpriv (util-linux), and its scrape of a staged scene
(a named namespace and an unnamed one, each held by a root process with a listener, an
ESTABLISHED pair and a CLOSE_WAIT socket) is compared with root's. With fewer capabilities it
must say what it cannot see, on stderr and in pysockopt_scrape_errors_total, or show it as
owner="unknown": never a series dropped without a word.

The interpreter under /root/.pyenv cannot be executed by another user, and a test must not
change /root: the unprivileged exporter runs the package and prometheus_client copied into a
world-readable temp dir with an interpreter of the same version that user may execute (this
one when it can, else the system's /usr/bin/python3.X); see also tests/unpriv.py, which forks
instead (no exec, so no setpriv).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

import pysockopt
from pysockopt.cli.exporter import CAPABILITIES

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOBODY = 65534
#: The set docs/deploy.md, the systemd unit, the Dockerfile and the DaemonSet give.
CAPS = ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

HOLDER = r"""
import socket, sys
l = socket.create_server(("127.0.0.1", 7000))
c = socket.create_connection(("127.0.0.1", 7000)); a, _ = l.accept(); c.close()  # a: CLOSE_WAIT
e = socket.create_connection(("127.0.0.1", 7000)); b, _ = l.accept()             # ESTABLISHED
print("ready", flush=True)
sys.stdin.read()
"""


def samples(text: str) -> Samples:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _root_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to stage namespaces and change users (CI runs as root)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    return None


@pytest.fixture(scope="module")
def readable() -> Iterator[tuple[str, str]]:
    """(interpreter, PYTHONPATH) that uid 65534 can run the exporter with."""
    reason = _root_reason()
    if reason:
        pytest.skip(reason)
    import prometheus_client

    with tempfile.TemporaryDirectory(prefix="pso-deploy-") as tmp:
        site = pathlib.Path(tmp, "site")
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(pathlib.Path(pysockopt.__file__).parent, site / "pysockopt", ignore=skip)
        shutil.copytree(pathlib.Path(prometheus_client.__file__).parent,
                        site / "prometheus_client", ignore=skip)
        import importlib.util

        backend = importlib.util.find_spec("_cffi_backend")  # the C core's runtime
        if backend is not None and backend.origin:
            shutil.copy(backend.origin, site)
        for d, _, files in os.walk(tmp):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644 if not f.endswith(".so") else 0o755)
        minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        tried = []
        for py in (os.path.realpath(sys.executable), f"/usr/bin/{minor}"):
            r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                "--clear-groups", py, "-c",
                                "import pysockopt._native, prometheus_client"],
                               env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                               capture_output=True, text=True)
            if r.returncode == 0:
                yield py, str(site)
                return
            tried.append(f"{py}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
        pytest.skip(f"no {minor} that uid {NOBODY} may run the package with "
                    f"(the system python3 of the same version): {tried}")


@contextlib.contextmanager
def _holder(cmd: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*cmd, sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def scene() -> Iterator[tuple[str, str]]:
    """Two namespaces held by root: ``ip netns`` NAME and an unnamed one; their netns labels."""
    reason = _root_reason()
    if reason:
        pytest.skip(reason)
    name = f"pso-deploy-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        unnamed = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        with _holder(["ip", "netns", "exec", name]), _holder(unnamed) as anon:
            inode = os.stat(f"/proc/{anon.pid}/ns/net").st_ino
            yield name, f"inode {inode}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _scrape(readable: tuple[str, str], caps: tuple[str, ...] | None) -> tuple[Samples, str]:
    """One scrape of `pysockopt exporter --all-netns` run as root (caps None) or nobody."""
    py, site = readable
    cmd = [py, "-m", "pysockopt", "exporter", "--all-netns", "--listen", "127.0.0.1:0"]
    if caps is not None:
        names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps) or "-all"
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               f"--inh-caps={names}", f"--ambient-caps={names}", *cmd]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin"},
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd="/")
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "serving http://127.0.0.1:" in line, line
            port = int(line.rsplit(":", 1)[1].split("/")[0])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=120) as r:
                    text = r.read().decode()
            except urllib.error.HTTPError as e:
                text = f"HTTP {e.code}"
        finally:
            proc.terminate()
            proc.wait(30)
        err.seek(0)
        said = err.read()
        assert not text.startswith("HTTP "), f"{text}: {said}"
        return samples(text), said


def _of(got: Samples, label: str) -> Samples:
    return {k: v for k, v in got.items() if ("netns", label) in k[1]}


def _owners(got: Samples, label: str) -> dict[str, float]:
    return {dict(k[1])["owner"]: v for k, v in _of(got, label).items()
            if k[0] == "pysockopt_tcp_close_wait_owner_sockets"}


@pytest.mark.root
def test_nobody_with_the_capability_set_sees_what_root_sees(
        readable: tuple[str, str], scene: tuple[str, str]) -> None:
    assert set(CAPS) == set(CAPABILITIES)  # the one list the exporter checks at start
    root, _ = _scrape(readable, None)
    least, err = _scrape(readable, CAPS)
    for label in scene:
        theirs, ours = _of(root, label), _of(least, label)
        assert theirs[("pysockopt_tcp_sockets", (("netns", label), ("state", "close_wait")))] \
            == 1
        owners = _owners(root, label)
        assert list(owners.values()) == [1] and "unknown" not in owners, owners
        assert ours == theirs, (label, set(ours) ^ set(theirs))
    assert "without CAP_" not in err, err


@pytest.mark.root
@pytest.mark.parametrize("drop", CAPS)
def test_without_one_capability_the_exporter_says_what_it_cannot_see(
        readable: tuple[str, str], scene: tuple[str, str], drop: str) -> None:
    named, unnamed = scene
    got, err = _scrape(readable, tuple(c for c in CAPS if c != drop))
    assert f"without {drop}" in err, err
    errors = got[("pysockopt_scrape_errors_total", ())]
    if drop == "CAP_SYS_ADMIN":  # neither namespace entered: said and counted
        assert not _of(got, named) and not _of(got, unnamed)
        assert errors >= 1 and f"entering network namespace {named}" in err, err
        assert "needs CAP_SYS_ADMIN" in err
    else:  # entered, but the owner is not seen: shown as unknown, not dropped
        assert _owners(got, named) == {"unknown": 1}
        if drop == "CAP_SYS_PTRACE":  # and the unnamed namespace is not even found
            assert not _of(got, unnamed)
            assert errors >= 1 and "could not be read" in err, err
        else:
            assert _owners(got, unnamed) == {"unknown": 1}


@pytest.mark.root
def test_nobody_without_capabilities_still_serves_and_says_so(
        readable: tuple[str, str], scene: tuple[str, str]) -> None:
    got, err = _scrape(readable, ())
    for cap in CAPS:
        assert f"without {cap}" in err, err
    assert got[("pysockopt_scrape_errors_total", ())] >= 1
    assert any(k[0] == "pysockopt_tcp_sockets" for k in got)  # its own namespace still there


# --- the Grafana dashboard, every panel's query against a real Prometheus

DASHBOARD = ROOT / "docs" / "deploy" / "grafana-dashboard.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _query(prom: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _targets(dash: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query the dashboard runs."""
    for panel in dash["panels"]:
        for t in panel.get("targets") or ():
            yield panel["title"], t["expr"], t.get("legendFormat", "")


def test_dashboard_is_valid_and_every_panel_links_its_source() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    names = [v["name"] for v in dash["templating"]["list"]]
    assert {"datasource", "instance", "netns", "container"} <= set(names)
    assert any("alerts.yml" in (link.get("tooltip", "") + link["title"])
               for link in dash["links"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for title, expr, legend in _targets(dash):
        assert expr and legend, title


@pytest.mark.root
def test_every_dashboard_query_returns_data_with_the_labels_its_legend_uses() -> None:
    reason = _root_reason()
    if reason:
        pytest.skip(reason)
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (.ci/install.sh installs it)")
    from netns import run_in_netns
    from sockpiles import Pile

    dash = json.loads(DASHBOARD.read_text())
    name = f"pso-dash-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    pile: Pile | None = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)

        def stage() -> Pile:
            p = Pile(port=5000)
            p.close_wait(12)  # over the CLOSE_WAIT pile threshold (10): a finding
            p.time_wait(20)
            for client, _ in p.established(3):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return p

        pile = run_in_netns(name, stage)
        # The exporter (--all-netns, so every series has its netns label) runs in the
        # scene's namespace with a PID namespace and /proc of its own and only the scene's
        # name under /run/netns: it does not scan (nor walk the descriptors of) the rest of
        # a busy host, which made its scrapes outlast any timeout. The scene's owners are
        # then outside its view: owner="unknown", a label all the same.
        hide = ('mount -t tmpfs pso-dash /run/netns && touch "/run/netns/$NAME" '
                '&& mount --bind /proc/self/ns/net "/run/netns/$NAME" && exec "$@"')
        exp_cmd = ["ip", "netns", "exec", name, "unshare", "--pid", "--fork", "--kill-child",
                   "--mount-proc", "--mount", "--propagation", "private", "sh", "-c", hide,
                   "sh", sys.executable, "-m", "pysockopt", "exporter", "--all-netns",
                   "--ports", "5000", "--listen", "127.0.0.1:0"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NAME": name}
        with tempfile.TemporaryDirectory() as tmp, \
                subprocess.Popen(exp_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True, env=env) as exp:
            try:
                assert exp.stdout is not None
                line = exp.stdout.readline()
                assert "serving http://127.0.0.1:" in line, line
                exp_port = int(line.rsplit(":", 1)[1].split("/")[0])
                prom_port = _free_port()
                pathlib.Path(tmp, "prometheus.yml").write_text(
                    "global: {scrape_interval: 2s, scrape_timeout: 2s}\n"
                    "scrape_configs:\n"
                    "  - job_name: pysockopt\n"
                    f"    static_configs: [{{targets: ['127.0.0.1:{exp_port}']}}]\n")
                with subprocess.Popen(["ip", "netns", "exec", name, prometheus,
                                       f"--config.file={tmp}/prometheus.yml",
                                       f"--storage.tsdb.path={tmp}/data",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"],
                                      stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) as prom:
                    try:
                        # TIME_WAIT lasts 60 s: made again once Prometheus is scraping
                        _check_dashboard(dash, prom_port, name,
                                         lambda: run_in_netns(name, lambda: pile.time_wait(20)))
                    finally:
                        prom.terminate()
                        prom.wait(30)
            finally:
                exp.kill()  # unshare ignores SIGTERM; --kill-child takes the exporter with it
                exp.wait(30)
    finally:
        if pile is not None:
            pile.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _check_dashboard(dash: dict[str, Any], port: int, netns: str,
                     time_wait: Callable[[], object]) -> None:
    from netns import run_in_netns
    from waiting import wait_for

    def query(expr: str) -> list[dict[str, Any]]:  # Prometheus listens in the scene
        return run_in_netns(netns, lambda: _query(port, expr))

    def enough() -> bool:
        try:  # a few scrapes stored: rate() over the panels' interval has two points
            got = query('count_over_time(pysockopt_scrape_duration_seconds[1m])')
        except OSError:
            return False
        return bool(got) and float(got[0]["value"][1]) >= 3

    wait_for(enough, 300, "Prometheus to store three scrapes of the exporter")
    time_wait()
    wait_for(lambda: query(f'pysockopt_tcp_time_wait_destination_sockets'
                                  f'{{netns="{netns}"}}'), 120,
             "Prometheus to store the fresh TIME_WAIT sockets")
    values = {"$instance": ".*", "$job": ".*", "$container": ".*", "$netns": netns,
              "$__rate_interval": "1m"}

    def expand(expr: str) -> str:
        for var, value in values.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        return expr

    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*), *(\w+)\)", v["definition"])
        assert m, v["definition"]
        found = {s["metric"].get(m[2]) for s in query(expand(m[1]))} - {None}
        if v["name"] == "netns":
            assert netns in found, found
        elif v["name"] in ("instance", "job"):
            assert found, v["name"]
    for title, expr, legend in _targets(dash):
        result = query(expand(expr))
        assert result, f"{title}: no data for {expand(expr)}"
        for label in re.findall(r"\{\{ *(\w+) *\}\}", legend):
            for series in result:
                assert series["metric"].get(label), (title, label, series["metric"])


# --- the packaging carries exactly the set the tests above prove

DEPLOY = ROOT / "docs" / "deploy"


def test_units_dockerfile_and_daemonset_give_exactly_the_capability_set() -> None:
    for unit in ("pysockopt-exporter.service", "pysockopt-textfile.service"):
        text = (DEPLOY / unit).read_text()
        for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
            lines = re.findall(rf"^{key}=(.*)$", text, re.M)
            assert [set(line.split()) for line in lines] == [set(CAPS)], (unit, key)
        assert re.search(r"^NoNewPrivileges=yes$", text, re.M)
        assert re.search(r"^ProtectSystem=strict$", text, re.M)
        assert not re.search(r"^(ProtectProc=invisible|ProcSubset=pid|PrivateNetwork=yes)",
                             text, re.M), unit  # each would hide what the exporter reports
    assert re.search(r"^DynamicUser=yes$", (DEPLOY / "pysockopt-exporter.service").read_text(),
                     re.M)
    docker = (DEPLOY / "Dockerfile").read_text()
    bits = {"CAP_SYS_ADMIN": 21, "CAP_SYS_PTRACE": 19, "CAP_DAC_READ_SEARCH": 2}
    assert {bits[c] for c in CAPS} == {int(b) for b in re.findall(r"1 << (\d+)", docker)}
    assert {bits[c] for c in CAPS} == {CAPABILITIES[c][0] for c in CAPS}
    assert re.search(r"^USER 65534:65534$", docker, re.M)
    manifest = (DEPLOY / "daemonset.yaml").read_text()
    added = re.search(r"add:\n((?: +- \w+\n)+)", manifest)
    assert added is not None
    assert {"CAP_" + c.strip(" -") for c in added[1].splitlines()} == set(CAPS)
    for needle in ("hostNetwork: true", "hostPID: true", "readOnlyRootFilesystem: true",
                   "runAsNonRoot: true", "- ALL"):
        assert needle in manifest, needle
