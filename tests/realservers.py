"""Real servers for the integration tests: started on loopback, non-default ports, temp dirs,
stopped by PID. PostgreSQL (a throwaway cluster made by initdb, run by pg_ctl as a non-root
user), redis-server, and HTTP servers (an origin and a forwarding proxy) in threads.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from unpriv import TEST_USER, pysockopt_test_user


def _pg_bin() -> str:
    """Debian's PostgreSQL binaries, newest major version first (15 on bookworm)."""
    root = "/usr/lib/postgresql"
    versions = sorted((d for d in os.listdir(root) if d.isdigit()), key=int, reverse=True) \
        if os.path.isdir(root) else []
    for version in versions:
        if os.access(os.path.join(root, version, "bin", "initdb"), os.X_OK):
            return os.path.join(root, version, "bin")
    return os.path.join(root, "15", "bin")


PG_BIN = _pg_bin()
PG_USER = TEST_USER  # a system user: initdb and postgres refuse to run as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as err:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}) before listening") from err
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal a server we started and wait until its PID is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        if os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- PostgreSQL


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
            return f"PostgreSQL is not installed ({PG_BIN}/{tool} missing; .ci/install.sh)"
    if os.geteuid() == 0 and not shutil.which("useradd"):
        return "running as root and useradd is missing: no non-root user for initdb"
    return None


def _pg_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (the user is made if missing)."""
    if os.geteuid() != 0:
        return None
    entry = pysockopt_test_user()  # made if missing; removed at the end of the session that made it
    return entry.pw_uid, entry.pw_gid


@dataclass
class Postgres:
    port: int
    pid: int
    host: str = "127.0.0.1"
    user: str = "postgres"
    dbname: str = "postgres"

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    ids = _pg_user()
    # Not pytest's tmp_path: under root it is 0700, and the cluster's user must reach it.
    top = tempfile.mkdtemp(prefix="pysockopt-pg-")
    try:
        if ids is not None:
            os.chown(top, *ids)
        data, sockdir, log = (os.path.join(top, n) for n in ("data", "sock", "log"))
        os.mkdir(sockdir)
        if ids is not None:
            os.chown(sockdir, *ids)

        def run(*argv: str) -> None:
            # As the cluster's user when we are root (None: subprocess's own defaults).
            user, group = ids if ids is not None else (None, None)
            subprocess.run(argv, check=True, capture_output=True, cwd=top,
                           env={"PATH": f"{PG_BIN}:/usr/bin:/bin", "LANG": "C"},
                           user=user, group=group, extra_groups=None if ids is None else [])

        run(f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8", "--locale=C")
        port = free_port()
        opts = f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(f"{PG_BIN}/pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start")
        with open(os.path.join(data, "postmaster.pid")) as f:
            pid = int(f.readline())
        try:
            yield Postgres(port, pid)
        finally:
            _stop_pid(pid, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- redis


def redis_missing() -> str | None:
    if not shutil.which("redis-server"):
        return "redis-server is not installed (Debian package redis-server; .ci/install.sh)"
    return None


@dataclass
class Redis:
    port: int
    pid: int
    host: str = "127.0.0.1"


@contextlib.contextmanager
def redis_server() -> Iterator[Redis]:
    top = tempfile.mkdtemp(prefix="pysockopt-redis-")
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--dir", top, "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield Redis(port, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(top, ignore_errors=True)


# --- HTTP: an origin and a forwarding proxy


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's connection stays in its pool

    def do_GET(self) -> None:  # http.server's name
        body = f"origin {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Proxy(_Origin):
    """A forward proxy for plain-http absolute URIs (what clients send to an HTTP proxy)."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not url.hostname:
            self.send_error(400, "proxy expects an absolute URI")
            return
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
        try:
            upstream.request("GET", url.path or "/")
            resp = upstream.getresponse()
            body = resp.read()
        finally:
            upstream.close()
        self.send_response(resp.status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Via", "1.1 pysockopt-test-proxy")
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Http:
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


@contextlib.contextmanager
def http_server(proxy: bool = False) -> Iterator[Http]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy if proxy else _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Http(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        server.server_close()
        thread.join()
