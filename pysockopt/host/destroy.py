"""Abort stuck TCP sockets with SOCK_DESTROY, one exactly named socket at a time.

SOCK_DESTROY is the sock_diag request ``ss -K`` sends: the kernel finds the socket by its
4-tuple, checks the socket cookie the dump reported (so a newer socket that took over the same
addresses is never the one hit), and aborts it as if it had received a reset: its owner's
next send() fails with ECONNABORTED, a pending recv() on an ESTABLISHED socket too, and the
peer (if it is still there) gets a RST. It needs CAP_NET_ADMIN in the socket's network
namespace and a kernel built with CONFIG_INET_DIAG_DESTROY.

``destroy_candidates`` turns filters into the exact list (refusing no filter at all, and
listeners unless asked); ``destroy`` aborts what it is given, one result per entry.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Final

from .._core import ffi, lib
from .._validate import check_seconds
from ..errors import InvalidConfigError
from ..tcpinfo import TcpState
from .connections import Connection, connections, parse_state
from .namespaces import NetNamespace, NetnsArg, entry_error, opened
from .remote import Target, foreign_records, namespace_inode, same_netns

__all__ = ["Remote", "destroy", "destroy_candidates", "outcome", "parse_remote"]

#: Each destroy is logged here, one line per socket (the CLI shows them on stderr).
log: Final = logging.getLogger("pysockopt.live")


# --- filters

class Remote:
    """A peer filter: an address, optionally with a port (``10.0.0.5``, ``[::1]:443``)."""

    __slots__ = ("address", "port")

    def __init__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 port: int | None) -> None:
        self.address = address
        self.port = port

    def matches(self, conn: Connection) -> bool:
        """Return True when ``conn``'s peer is this address (and port, when given)."""
        if self.port is not None and conn.remote_port != self.port:
            return False
        peer = ipaddress.ip_address(conn.remote_address)
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped  # an IPv4 peer of a dual-stack socket
        return peer == self.address

    def __repr__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return host if self.port is None else f"{host}:{self.port}"


def parse_remote(text: str) -> Remote:
    """Parse ``ADDR``, ``ADDR:PORT``, ``[IPV6]`` or ``[IPV6]:PORT`` into a Remote filter."""
    value = text.strip()
    port: str | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidConfigError("remote", text, "ADDR, ADDR:PORT or [IPV6]:PORT")
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host = value  # IPv4 without a port, or bare IPv6
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidConfigError("remote", text, "an IP address, optionally :PORT") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    number: int | None = None
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise InvalidConfigError("remote", text, "a port 1..65535 after the address")
        number = int(port)
    return Remote(address, number)


def _idle_ms(conn: Connection) -> int | None:
    # Idle = since anything came from the peer: data or a bare ACK (keepalive answers count
    # as life). A socket without tcp_info (TIME_WAIT, request sockets) has no idle time.
    info = conn.info
    if info is None or info.last_data_recv is None or info.last_ack_recv is None:
        return None
    return min(info.last_data_recv, info.last_ack_recv)


def destroy_candidates(
    *,
    states: Iterable[TcpState | int | str] | TcpState | int | str | None = None,
    port: int | None = None,
    remote: Remote | str | None = None,
    pid: int | None = None,
    idle_over: float | None = None,
    include_listeners: bool = False,
    netns: NetnsArg = None,
    started_before_caller: bool = False,
) -> list[Connection]:
    """Return exactly the sockets that match every filter given: what ``destroy`` would hit.

    ``states``: TcpStates or names; ``port``: local or remote port; ``remote``: the peer
    (``"10.0.0.5"``, ``"10.0.0.5:443"``, ``"[::1]:80"``); ``pid``: sockets that process holds
    (from /proc/PID/fd); ``idle_over``: seconds since anything (data or ACK) came from the
    peer, from TCP_INFO last_data_recv / last_ack_recv (sockets without TCP_INFO, such as
    TIME_WAIT, never match it). Refuses (ValueError) when no filter is given at all, and
    when LISTEN is asked for without ``include_listeners``; without it listeners never match.
    A bad value is an InvalidConfigError.
    ``netns`` lists another network namespace (an ip netns name, a path, a pid: see
    ``connections``); the records then carry it, and ``destroy`` acts inside it. With ``pid``
    and no ``netns``, the process's own namespace is the one listed, and the sockets it holds
    from other namespaces are listed in theirs. ``started_before_caller``: refuse
    (ProcessLookupError) a ``pid`` whose process started after the caller did (reused).
    """
    if states is None and port is None and remote is None and pid is None and idle_over is None:
        raise ValueError(
            "refusing to select every socket: give at least one filter (states, port, "
            "remote, pid or idle_over)")
    wanted: set[TcpState] | None = None
    if states is not None:
        wanted = ({parse_state(states)} if isinstance(states, (int, str))
                  else {parse_state(s) for s in states})
        if TcpState.LISTEN in wanted and not include_listeners:
            raise ValueError(
                "refusing LISTEN sockets: destroying a listener stops the service accepting "
                "connections; pass include_listeners=True to mean it")
        if TcpState.NEW_SYN_RECV in wanted:
            wanted.add(TcpState.SYN_RECV)
    if isinstance(remote, str):
        remote = parse_remote(remote)
    idle_ms = None
    if idle_over is not None:
        idle_ms = check_seconds("idle_over", idle_over, zero=True) * 1000
    inodes: set[int] | None = None
    query_states = (wanted if wanted is not None
                    else [s for s in TcpState if s != TcpState.LISTEN or include_listeners])
    if pid is not None:
        with Target(pid, started_before_caller) as target:
            fds = target.socket_fds()
            inodes = set(fds)
            where = target.proc_dir() or f"/proc/{pid}"
            foreign: list[Connection] = []
            if netns is None:
                if not same_netns(pid, where):
                    # A containerised process: its sockets are in its own namespace, read
                    # through a living thread when the main one has exited.
                    netns = pid if where == f"/proc/{pid}" else f"{where}/ns/net"
                # Sockets it holds from other namespaces, each listed (and destroyed) there.
                listed = {c.inode for c in connections(netns=netns)}
                foreign = foreign_records(
                    target, {i: f for i, f in fds.items() if i not in listed},
                    namespace_inode(where), port, states=query_states,
                    with_info=idle_ms is not None)
        found = connections(states=query_states, port=port, with_info=idle_ms is not None,
                            netns=netns) + foreign
    else:
        found = connections(states=query_states, port=port, with_info=idle_ms is not None,
                            netns=netns)
    out = []
    for c in found:
        if c.state == TcpState.LISTEN and not include_listeners:
            continue
        if remote is not None and not remote.matches(c):
            continue
        if inodes is not None and c.inode not in inodes:
            continue
        if idle_ms is not None:
            idle = _idle_ms(c)
            if idle is None or idle < idle_ms:
                continue
        out.append(c)
    return out


# --- destroy

#: What each refusal means, in terms of what to do about it.
_MEANING: Final = {
    # The kernel answers ENOENT both when nothing has the 4-tuple and when a newer socket has
    # it (cookie mismatch): either way the socket that was listed is gone, nothing was hit.
    errno.ENOENT: "already gone: no socket with that 4-tuple and cookie (closed, or replaced "
                  "by a newer socket, which was left alone)",
    errno.ESTALE: "not destroyed: another socket now uses that 4-tuple (its cookie differs)",
    errno.EPERM: "not permitted: SOCK_DESTROY needs CAP_NET_ADMIN in the socket's network "
                 "namespace (run as root there)",
    errno.EACCES: "not permitted: SOCK_DESTROY needs CAP_NET_ADMIN in the socket's network "
                  "namespace (run as root there)",
    errno.EOPNOTSUPP: "not supported: this kernel was built without CONFIG_INET_DIAG_DESTROY",
    errno.EINVAL: "the kernel rejected the request as invalid",
}


def _error(code: int, conn: Connection) -> OSError:
    what = f"{conn.state.label} {conn.local} {conn.remote}"
    meaning = _MEANING.get(code, os.strerror(code))
    return OSError(code, f"{os.strerror(code)}: {what}: {meaning}")


def _cookie(conn: Connection) -> int | None:
    # The record's socket cookie from sock_diag; 0 where the source has none (/proc). The
    # kernel's is 64 bits: anything else (a hand-made record) names no socket.
    value = conn.cookie
    return value if isinstance(value, int) and 0 < value < 1 << 64 else None


def _request(req: object, conn: Connection, cookie: int) -> None:
    src = socket.inet_pton(conn.family, conn.local_address)
    dst = socket.inet_pton(conn.family, conn.remote_address)
    r = req
    r.cookie = cookie  # type: ignore[attr-defined]  # cffi struct pso_destroy_req
    ffi.memmove(r.src, src, len(src))  # type: ignore[attr-defined]
    ffi.memmove(r.dst, dst, len(dst))  # type: ignore[attr-defined]
    r.sport = conn.local_port  # type: ignore[attr-defined]
    r.dport = conn.remote_port  # type: ignore[attr-defined]
    r.family = int(conn.family)  # type: ignore[attr-defined]
    # SYN_RECV entries are the kernel's request sockets (NEW_SYN_RECV internally).
    r.state = int(conn.state)  # type: ignore[attr-defined]


def destroy(conns: Sequence[Connection] | Iterable[Connection]) -> list[OSError | None]:
    """Abort each socket with SOCK_DESTROY; return one result per entry, in order.

    None means destroyed. Otherwise the OSError says why, with the kernel's errno:
    FileNotFoundError (ENOENT) when the socket is already gone, PermissionError (EPERM)
    without CAP_NET_ADMIN, EOPNOTSUPP on a kernel without CONFIG_INET_DIAG_DESTROY, ENOENT
    also when a different socket now has that 4-tuple (the cookie did not match: untouched), EINVAL
    for a record that carries no socket cookie (never sent: a socket is only destroyed by its
    exact name). One bad entry never fails the batch. The netlink socket is made in each
    record's network namespace (``Connection.netns``, set by ``connections(netns=...)``; the
    caller's own otherwise), entered from a short-lived native thread, so destroying inside
    another namespace also needs CAP_SYS_ADMIN to enter it. Each outcome is
    logged, one line per socket, on the ``pysockopt.live`` logger.
    """
    items = list(conns)
    results: list[OSError | None] = [None] * len(items)
    send: list[int] = []
    for i, conn in enumerate(items):
        if not isinstance(conn, Connection):
            raise TypeError(f"destroy() takes Connection records, not {type(conn).__name__}")
        if _cookie(conn) is None:
            results[i] = OSError(
                errno.EINVAL, f"{os.strerror(errno.EINVAL)}: {conn.state.label} {conn.local} "
                f"{conn.remote}: the record carries no socket cookie (from /proc, or an older "
                "build) or one out of the kernel's 64-bit range, so the socket cannot be "
                "named exactly: not destroyed")
        else:
            send.append(i)
    # One batch per network namespace: the netlink socket must be made inside the sockets'
    # own (records from connections(netns=...) carry it; None is the caller's).
    groups: dict[int | None, list[int]] = {}
    for i in send:
        ns = items[i].netns
        groups.setdefault(None if ns is None else ns.inode, []).append(i)
    for indices in groups.values():
        ns = items[indices[0]].netns
        try:
            answers = _destroy_in(ns, [items[i] for i in indices])
        except OSError as err:  # the namespace could not be entered: none of these was sent
            answers = [err] * len(indices)
        for i, answer in zip(indices, answers, strict=True):
            results[i] = answer
    for conn, result in zip(items, results, strict=True):
        log.info("%s %s %s: %s", conn.state.label, conn.local, conn.remote, outcome(result))
    return results


def _destroy_in(ns: NetNamespace | None, conns: list[Connection]) -> list[OSError | None]:
    reqs = ffi.new("struct pso_destroy_req[]", len(conns))
    answers = ffi.new("int[]", len(conns))
    for slot, conn in enumerate(conns):
        cookie = _cookie(conn)
        assert cookie is not None
        _request(reqs[slot], conn, cookie)
    with opened(ns) as target:
        if target is None:
            lib.pso_sock_destroy(reqs, len(conns), answers)
        else:
            step = ffi.new("int *")
            rc = lib.pso_netns_sock_destroy(target.fd, reqs, len(conns), answers, step)
            if rc and step[0]:
                raise entry_error(rc, step[0], target)
    return [None if answers[i] == 0 else _error(-answers[i], c) for i, c in enumerate(conns)]


def outcome(result: OSError | None) -> str:
    """``destroyed``, ``already gone``, or ``error: ...`` for one result of ``destroy``."""
    if result is None:
        return "destroyed"
    if result.errno == errno.ENOENT:
        return "already gone"
    return f"error: {result.strerror}"
