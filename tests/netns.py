"""Private network namespaces for tests whose peer must vanish without FIN or RST.

``NetnsPair`` creates two namespaces joined by a veth pair (addresses 10.199.N.1 and .2 on
a /30, only inside those namespaces), lets a test open sockets in either one, and takes a
side's link down so its packets stop: the classic vanished peer. Everything is removed on
exit. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

from pysockopt._platform import CLONE_NEWNET

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")
#: socket.socket under a name NetnsPair's own ``socket`` method does not shadow.
Socket = socket.socket


def have_netns() -> str | None:
    """Return None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here"
    return None


def ip(*args: str) -> None:
    """Run ``ip ARGS`` (iproute2), raising CalledProcessError when it fails."""
    subprocess.run(["ip", *args], check=True, capture_output=True)


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_netns(prefix: str = "pso") -> Iterator[str]:
    """Make a network namespace named ``PREFIX-<uuid>`` with its loopback up; yield its ip
    netns name; delete it on exit (a test never deletes a namespace it did not make)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def sysctl(name: str, value: str | int, netns: str | None = None) -> None:
    """Set sysctl ``name`` (dotted: ``net.ipv4.tcp_tw_reuse``) to ``value``.

    With ``netns``, inside that ip-netns namespace; else in the calling thread's namespace
    (/proc/sys/net follows the thread that opens it: call it from ``run_in_netns``).
    """
    if netns is not None:
        subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", f"{name}={value}"],
                       check=True)
        return
    with open(f"/proc/sys/{name.replace('.', '/')}", "w") as f:
        f.write(str(value))


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has joined namespace ``name``; return its result.

    A socket keeps the namespace it was created in, so sockets made by ``fn`` stay usable
    from any thread afterwards.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            setns(f"/run/netns/{name}")
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    # setns() changes only the calling thread; the thread ends right after, so the main
    # thread's namespace is never touched.
    t = threading.Thread(target=target)
    t.start()
    t.join()
    if error:
        # Popped, not indexed: the error's traceback holds target's frame, which holds the
        # list; left in it, the error (and a socket it holds, as an HTTPError does) would live
        # until a cyclic collection — minutes later, a CLOSE_WAIT in the test's own scene.
        raise error.pop()
    return result[0]


_subnet_counter = iter(range(1, 250))


class NetnsPair:
    """Two namespaces ``a`` and ``b`` joined by veth; ``addr_a``/``addr_b`` are their IPs."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        n = next(_subnet_counter)
        self.a = f"pso-a-{tag}"
        self.b = f"pso-b-{tag}"
        self.veth_a = f"psa{tag}"
        self.veth_b = f"psb{tag}"
        self.addr_a = f"10.199.{n}.1"
        self.addr_b = f"10.199.{n}.2"

    def __enter__(self) -> NetnsPair:
        ip("netns", "add", self.a)
        try:
            ip("netns", "add", self.b)
            ip("link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
            ip("link", "set", self.veth_a, "netns", self.a)
            ip("link", "set", self.veth_b, "netns", self.b)
            for ns, dev, addr in ((self.a, self.veth_a, self.addr_a),
                                  (self.b, self.veth_b, self.addr_b)):
                ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def socket(self, side: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """Return a new IPv4 socket created inside namespace ``side`` ("a" or "b")."""
        return run_in_netns(self.a if side == "a" else self.b,
                            lambda: socket.socket(socket.AF_INET, kind))

    def in_ns(self, side: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside namespace ``side`` (for code that creates sockets itself)."""
        return run_in_netns(self.a if side == "a" else self.b, fn)

    def link_down(self, side: str) -> None:
        """Take ``side``'s end of the veth down: its packets stop, no FIN, no RST."""
        ns, dev = (self.a, self.veth_a) if side == "a" else (self.b, self.veth_b)
        ip("-n", ns, "link", "set", dev, "down")

    @contextlib.contextmanager
    def connected(self, port: int = 5555) -> Iterator[tuple[Socket, Socket]]:
        """Yield (client in a, accepted server socket in b), closed afterwards."""
        listener = self.socket("b")
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.addr_b, port))
        listener.listen(16)
        client = self.socket("a")
        client.settimeout(5)
        client.connect((self.addr_b, port))
        server, _ = listener.accept()
        listener.close()
        try:
            yield client, server
        finally:
            client.close()
            server.close()
