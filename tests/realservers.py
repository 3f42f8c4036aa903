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

from helpers import free_port
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


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30,
              host: str = "127.0.0.1", netns: str | None = None) -> None:
    """Wait until ``host:port`` accepts (from inside ``netns`` when given)."""
    deadline = time.monotonic() + timeout

    def probe() -> None:
        socket.create_connection((host, port), timeout=1).close()

    while True:
        try:
            if netns is None:
                probe()
            else:
                from netns import run_in_netns

                run_in_netns(netns, probe)
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


def _in_netns(netns: str | None, ids: tuple[int, int] | None) -> list[str]:
    """The argv prefix that runs a command inside ``netns`` as ``ids`` (uid, gid), if given."""
    if netns is None:
        return []
    prefix = ["ip", "netns", "exec", netns]
    if ids is not None:  # subprocess's user= would drop root before `ip netns exec` runs
        prefix += ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups"]
    return prefix


@contextlib.contextmanager
def postgres(host: str = "127.0.0.1", netns: str | None = None) -> Iterator[Postgres]:
    """A throwaway cluster listening on ``host`` (inside network namespace ``netns``)."""
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

        def run(*argv: str, netns: str | None = None) -> None:
            # As the cluster's user when we are root (None: subprocess's own defaults).
            if netns is not None:
                subprocess.run([*_in_netns(netns, ids), *argv], check=True, capture_output=True,
                               cwd=top, env={"PATH": f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                                             "LANG": "C"})
                return
            user, group = ids if ids is not None else (None, None)
            subprocess.run(argv, check=True, capture_output=True, cwd=top,
                           env={"PATH": f"{PG_BIN}:/usr/bin:/bin", "LANG": "C"},
                           user=user, group=group, extra_groups=None if ids is None else [])

        run(f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8", "--locale=C")
        if host != "127.0.0.1":  # initdb's trust covers loopback only
            with open(os.path.join(data, "pg_hba.conf"), "a") as f:
                f.write("host all all 0.0.0.0/0 trust\n")
        port = free_port()
        opts = f"-p {port} -k {sockdir} -c listen_addresses={host} -c fsync=off"
        run(f"{PG_BIN}/pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start",
            netns=netns)
        with open(os.path.join(data, "postmaster.pid")) as f:
            pid = int(f.readline())
        try:
            yield Postgres(port, pid, host)
        finally:
            _stop_pid(pid, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- redis


def redis_missing() -> str | None:
    if not shutil.which("redis-server"):
        return "redis-server is not installed (Debian package redis-server; .ci/install.sh)"
    return None


def redis_tls_missing() -> str | None:
    """Why redis-server here cannot serve TLS (built without it), or None."""
    reason = redis_missing()
    if reason:
        return reason
    out = subprocess.run(
        ["redis-server", "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent",
         "--tls-key-file", "/nonexistent"], capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).lower()
    if "failed to configure tls" in text or "tls-ca-cert" in text:
        return None  # it parsed the TLS directives and tried: built with TLS
    return f"redis-server was built without TLS: {text.strip()[-200:]}"


@dataclass
class Redis:
    port: int
    pid: int
    host: str = "127.0.0.1"
    tls_port: int | None = None


@contextlib.contextmanager
def redis_server(host: str = "127.0.0.1", netns: str | None = None,
                 tls: Cert | None = None) -> Iterator[Redis]:
    """redis-server on ``host`` (inside ``netns``); with ``tls`` also a TLS port."""
    top = tempfile.mkdtemp(prefix="pysockopt-redis-")
    port = free_port()
    tls_port = free_port() if tls is not None else None
    extra = [] if tls is None else [
        "--tls-port", str(tls_port), "--tls-cert-file", tls.cert, "--tls-key-file", tls.key,
        "--tls-ca-cert-file", tls.cert, "--tls-auth-clients", "no"]
    proc = subprocess.Popen(
        [*_in_netns(netns, None), shutil.which("redis-server") or "redis-server",
         "--port", str(port), "--bind", host, "--dir", top, "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--protected-mode", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, host=host, netns=netns)
        yield Redis(port, proc.pid, host, tls_port)
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


# --- TLS: a self-signed certificate made for the test


@dataclass
class Cert:
    """A self-signed certificate (its own CA) for ``ip``, and its key, as PEM files."""

    cert: str
    key: str


def cert_missing() -> str | None:
    if not shutil.which("openssl"):
        return "openssl is not installed (needed to make a test certificate)"
    return None


@contextlib.contextmanager
def self_signed(ip: str) -> Iterator[Cert]:
    """A throwaway self-signed certificate whose subjectAltName is ``ip``."""
    top = tempfile.mkdtemp(prefix="pysockopt-tls-")
    try:
        cert, key = os.path.join(top, "cert.pem"), os.path.join(top, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", key, "-out", cert, "-subj", "/CN=pysockopt-test",
                        "-addext", f"subjectAltName=IP:{ip}"],
                       check=True, capture_output=True)
        os.chmod(top, 0o755)  # redis-server reads them; the dir is made 0700
        for path in (cert, key):
            os.chmod(path, 0o644)
        yield Cert(cert, key)
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- servers run inside a network namespace: `python realservers.py KIND HOST PORT ...`


class _Hanging(_Origin):
    """``/hang...`` never answers (the connection stays open); anything else answers."""

    def do_GET(self) -> None:
        if self.path.startswith("/hang"):
            time.sleep(3600)
        super().do_GET()


def _serve_http(host: str, port: int, cert: str | None, key: str | None) -> None:
    server = http.server.ThreadingHTTPServer((host, port), _Hanging)
    server.daemon_threads = True
    if cert is not None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


def _serve_grpc(host: str, port: int, options: list[tuple[str, int]]) -> None:
    from concurrent import futures

    import grpc

    def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(3600)
        return request

    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        "Hang": grpc.unary_unary_rpc_method_handler(hang),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=options)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("pysockopt.Test", handlers),))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


@dataclass
class Served:
    """A server process started by :func:`serve_in_netns`."""

    port: int
    pid: int
    host: str


@contextlib.contextmanager
def serve_in_netns(netns: str, host: str, kind: str, *args: str) -> Iterator[Served]:
    """Run this file as ``kind`` (http, https CERT KEY, grpc OPTIONS_JSON) inside ``netns``."""
    import sys

    port = free_port()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, os.path.abspath(__file__), kind, host,
         str(port), *args], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, None, host=host, netns=netns)
        yield Served(port, proc.pid, host)
    finally:
        proc.kill()
        proc.wait()


def _main(argv: list[str]) -> None:
    import json

    kind, host, port = argv[0], argv[1], int(argv[2])
    if kind == "http":
        _serve_http(host, port, None, None)
    elif kind == "https":
        _serve_http(host, port, argv[3], argv[4])
    elif kind == "grpc":
        _serve_grpc(host, port, [(k, int(v)) for k, v in json.loads(argv[3])])
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
