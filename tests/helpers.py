"""Small helpers several test files share, each defined once: a free port, a netlink message,
and the CLI run in-process or as a process (inside a namespace if asked).

Namespace helpers (setns, sysctls, namespace pairs) live in netns.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import subprocess
import sys

from pysockopt.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NLM_F_MULTI = 2


def free_port() -> int:
    """Return a loopback TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quiet_listener(family: int, host: str, backlog: int = 128, *,
                   dual_stack: bool = False) -> socket.socket:
    """Return a listener on a port the kernel picks that no other socket uses yet.

    Without SO_REUSEADDR the kernel never picks a port a TIME_WAIT socket holds as its own
    local port, but a stranger may still carry the number as its *remote* port (the client
    side of an earlier listener's connections, 60 s in TIME_WAIT; on a busy host, anyone's):
    a test counting sockets by port would count those too. Such a port is kept bound until a
    quiet one is found, so the kernel does not hand it out again meanwhile.
    """
    from pysockopt import TcpState, state_counts

    rejected: list[socket.socket] = []
    try:
        for _ in range(100):
            sock = socket.socket(family, socket.SOCK_STREAM)
            if dual_stack:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, 0))
            sock.listen(backlog)
            if state_counts(port=sock.getsockname()[1]) == {TcpState.LISTEN: 1}:
                return sock
            rejected.append(sock)
        raise AssertionError("no quiet port in 100 tries")
    finally:
        for sock in rejected:
            sock.close()


def nlmsg(kind: int, payload: bytes, flags: int = NLM_F_MULTI, seq: int = 7, *,
          pad: bool = False) -> bytes:
    """One netlink message: the 16-byte header (nlmsg_len counts the unpadded message), then
    ``payload``, then with ``pad`` the zero bytes up to the next 4-byte boundary."""
    length = 16 + len(payload)
    return (struct.pack("=IHHII", length, kind, flags, seq, 0) + payload
            + (bytes(-length % 4) if pad else b""))


def run_cli(*args: str) -> tuple[int, str]:
    """Run ``pysockopt ARGS`` in this process; return (exit status, stdout)."""
    out = io.StringIO()
    status = main(list(args), out=out)
    return status, out.getvalue()


def run_cli_err(*args: str) -> tuple[int, str, str]:
    """``run_cli`` that also captures stderr: (exit status, stdout, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status, out = run_cli(*args)
    return status, out, err.getvalue()


def cli_argv(*args: str) -> list[str]:
    """The command line that runs ``pysockopt ARGS`` as a process of this interpreter."""
    return [sys.executable, "-m", "pysockopt", *args]


def cli_process(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``pysockopt ARGS`` as a process (inside ip-netns ``netns`` if given), this
    checkout first on its path; output captured as text, 60 s at most."""
    cmd = cli_argv(*args)
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
