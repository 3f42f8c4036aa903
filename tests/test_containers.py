"""Real Docker and Podman containers: pysockopt names them and finds the pile inside.

Each test starts a container of a local image (``PYSOCKOPT_TEST_IMAGE``: a debootstrap rootfs
imported by .ci/image.sh, no registry) with ``--network none`` (a network namespace of its
own, the host's network untouched), holding a CLOSE_WAIT pile made by a Python process inside.
From the host, ``namespaces()``, ``pysockopt netns --json`` and ``pysockopt diagnose
--all-netns --json`` must give the runtime, the container's id and name, and the pile.

Docker: the daemon at ``DOCKER_HOST`` (.ci/dockerd.sh starts one without a bridge, iptables or
forwarding). Podman: rootful, with ``--ulimit`` given (root may lack CAP_SYS_RESOURCE here);
CONTAINERS_CONF may point at a containers.conf for a host without systemd (.ci/containers.sh).
Without a runtime, the image or root, each test skips and says why; .ci/containers.sh makes
them all present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from waiting import wait_for

from pysockopt import namespaces

#: Inside the container: N connections to its own listener, the clients closed, the accepted
#: ends never closed (N CLOSE_WAIT), then the port on stdout and a long sleep.
PILE = """
import socket, sys, time
n = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(n + 10)
port = listener.getsockname()[1]
clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
accepted = [listener.accept()[0] for _ in range(n)]
for c in clients:
    c.close()
print(port, flush=True)
time.sleep(3600)
"""

PILE_SIZE = {"docker": 150, "podman": 120}


def _cli_path(runtime: str) -> str | None:
    if runtime == "docker" and os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"  # Debian's docker.io client, of its daemon's API version
    return shutil.which(runtime)


def _missing(runtime: str) -> str | None:
    """Why ``runtime`` cannot run a test container here, or None."""
    if os.geteuid() != 0:
        return "needs root (rootful containers, other processes' namespaces); CI runs as root"
    cli = _cli_path(runtime)
    if cli is None:
        return f"{runtime} is not installed (.ci/containers.sh installs it)"
    image = os.environ.get("PYSOCKOPT_TEST_IMAGE")
    if not image:
        return "no local test image: PYSOCKOPT_TEST_IMAGE unset (.ci/containers.sh sets it)"
    probe = [cli, "image", "inspect", image]
    try:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"{runtime} did not answer within 60 s"
    if r.returncode != 0:
        return f"{runtime} cannot use image {image}: {(r.stderr or r.stdout).strip()[:300]}"
    return None


@dataclass
class Running:
    runtime: str
    cli: str
    name: str
    id: str
    pid: int
    port: int
    size: int


def _run(cmd: list[str], timeout: float = 120) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r.stdout


@pytest.fixture(params=["docker", "podman"])
def container(request: pytest.FixtureRequest) -> Iterator[Running]:
    runtime: str = request.param
    reason = _missing(runtime)
    if reason:
        pytest.skip(reason)
    cli = _cli_path(runtime)
    assert cli is not None
    name = f"pso-test-{uuid.uuid4().hex[:12]}"
    size = PILE_SIZE[runtime]
    limits = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"] \
        if runtime == "podman" else []
    _run([cli, "run", "-d", "--network", "none", *limits, "--name", name,
          os.environ["PYSOCKOPT_TEST_IMAGE"], "python3", "-c", PILE, str(size)])
    try:
        def port() -> int | None:
            out = _run([cli, "logs", name]).strip()
            return int(out) if out.isdigit() else None

        listening = wait_for(port, 120, f"the pile in {runtime} container {name}")
        info = json.loads(_run([cli, "inspect", name]))[0]
        yield Running(runtime, cli, name, info["Id"], int(info["State"]["Pid"]), listening,
                      size)
    finally:
        subprocess.run([cli, "rm", "-f", name], capture_output=True, timeout=120)


def _pysockopt(*args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "pysockopt", *args], capture_output=True,
                       text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout


def test_namespaces_name_the_container(container: Running) -> None:
    (ns,) = [n for n in namespaces() if container.pid in n.pids]
    assert ns.container is not None
    assert (ns.container.runtime, ns.container.id, ns.container.name) == (
        container.runtime, container.id, container.name)
    assert ns.inode == os.stat(f"/proc/{container.pid}/ns/net").st_ino
    assert ns.inode != os.stat("/proc/self/ns/net").st_ino  # --network none: its own


def test_netns_json_names_the_container_and_counts_its_sockets(container: Running) -> None:
    status, out = _pysockopt("netns", "--json")
    assert status == 0
    rows = [r for r in json.loads(out)["namespaces"]
            if r["container"] and r["container"]["id"] == container.id]
    (row,) = rows
    assert row["container"]["runtime"] == container.runtime
    assert row["container"]["name"] == container.name
    assert container.pid in row["pids"] and row["error"] is None
    # the listener and the CLOSE_WAIT pile; the clients' orphaned FIN_WAIT2 may be timing out
    assert container.size + 1 <= row["sockets"] <= 2 * container.size + 1


def test_diagnose_all_netns_finds_the_pile_in_the_container(container: Running) -> None:
    status, out = _pysockopt("diagnose", "--all-netns", "--json")
    data = json.loads(out)
    assert status != 0  # a CRITICAL finding: the pile
    (entry,) = [n for n in data["namespaces"]
                if n["netns"]["container"] and n["netns"]["container"]["id"] == container.id]
    assert entry["netns"]["container"]["runtime"] == container.runtime
    assert entry["netns"]["container"]["name"] == container.name
    d = entry["diagnosis"]
    assert d["counts"]["CLOSE_WAIT"] == container.size and d["counts"]["LISTEN"] == 1
    (pile,) = [f for f in d["findings"] if f["code"] == "CLOSE_WAIT_PILE"]
    assert pile["evidence"]["close_wait"] == container.size
    assert pile["port"] == container.port and pile["severity"] == "critical"
    assert {"pid": container.pid, "command": "python3"} in pile["processes"]
