"""errno explained in socket terms: name, message, category, whether to retry, what to do.

Names and numbers come from the platform's own <errno.h>, read when the extension was built
(csrc/gen_errno_table.py), so ``errno_info("ECONNRESET").code`` is 104 on Linux and 54 on
macOS. Messages come from the platform's strerror. Where several names share a number
(EWOULDBLOCK and EAGAIN), the primary name is the one Python's ``errno.errorcode`` uses and the
others are listed as aliases.

Every errno socket code meets carries pysockopt's own explanation (``meaning``) and what to do
about it (``advice``); every other errno gets category OTHER and a meaning derived from its
message. :func:`triage` turns an exception from socket code into retry / reconnect / give up.
"""

from __future__ import annotations

# This module is pysockopt.errno; with absolute imports (Python 3) ``import errno`` is the
# standard library's, named std_errno here so the two are never confused when reading.
import difflib
import errno as std_errno
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from ._core import ffi, lib
from .errors import UnknownErrnoName

__all__ = [
    "Action",
    "ErrnoInfo",
    "ErrorCategory",
    "Triage",
    "UnknownErrnoName",
    "errno_info",
    "errno_search",
    "errno_table",
    "triage",
]


class ErrorCategory(Enum):
    """What kind of failure an errno reports, from a socket program's point of view."""

    WOULD_BLOCK = "would-block"
    INTERRUPTED = "interrupted"
    IN_PROGRESS = "in-progress"
    TIMEOUT = "timeout"
    PEER_RESET = "peer-reset"
    PEER_CLOSED = "peer-closed"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    ADDRESS = "address"
    RESOURCE = "resource"
    INVALID = "invalid"
    PERMISSION = "permission"
    RESOLUTION = "resolution"
    TLS = "tls"
    OTHER = "other"

    @property
    def description(self) -> str:
        """One sentence saying what errors in this category have in common."""
        return _CATEGORY_TEXT[self]


_CATEGORY_TEXT: Final[Mapping[ErrorCategory, str]] = {
    ErrorCategory.WOULD_BLOCK: "a non-blocking socket is not ready yet; not an error",
    ErrorCategory.INTERRUPTED: "a signal interrupted a blocking call; nothing is wrong",
    ErrorCategory.IN_PROGRESS: "a non-blocking connect() is under way; the result comes later",
    ErrorCategory.TIMEOUT: "the kernel (or your own deadline) gave up waiting for the peer",
    ErrorCategory.PEER_RESET: "the connection was reset or aborted; it is gone",
    ErrorCategory.PEER_CLOSED: "writing to, or using, a connection that is already closed",
    ErrorCategory.REFUSED: "nothing accepts connections at that address",
    ErrorCategory.UNREACHABLE: "no route to the network or host, or the network is down",
    ErrorCategory.ADDRESS: "the local address or port cannot be used (taken, not local, "
                           "no free ephemeral port)",
    ErrorCategory.RESOURCE: "out of descriptors, buffers, memory or space",
    ErrorCategory.INVALID: "the call is wrong for this socket: bad descriptor, not a socket, "
                           "bad argument, unsupported option or operation",
    ErrorCategory.PERMISSION: "not allowed: privileges, firewall, or access rights",
    ErrorCategory.RESOLUTION: "the host name could not be resolved (socket.gaierror)",
    ErrorCategory.TLS: "the TLS layer failed: certificates, versions, or a protocol error",
    ErrorCategory.OTHER: "not specific to sockets",
}


class Action(Enum):
    """What an error handler should do next."""

    #: Call the same operation again: at once (EINTR), when the socket is ready (EAGAIN,
    #: EINPROGRESS), or after a short back-off (ENOBUFS, EMFILE).
    RETRY = "retry"
    #: This connection is unusable: close it; a client opens a new one (with back-off).
    RECONNECT = "reconnect"
    #: Retrying fails the same way: a bug, a configuration error or a missing privilege.
    GIVE_UP = "give-up"


@dataclass(frozen=True, slots=True)
class ErrnoInfo:
    """One errno value explained.

    ``code`` and ``name`` are this platform's (``name`` is the one Python's
    ``errno.errorcode`` uses; ``aliases`` are other names for the same number). ``message`` is
    the platform's strerror text. ``retryable`` is True only where calling the same operation
    again can succeed (see docs/errno.md for the list and why); ``action`` is what an error
    handler should do; ``meaning`` and ``advice`` say what happened and what to do, in socket
    terms. An errno this platform does not define has ``name == ""`` and ``known`` False.
    """

    code: int
    name: str
    message: str
    category: ErrorCategory
    retryable: bool
    meaning: str
    advice: str
    action: Action
    aliases: tuple[str, ...]

    @property
    def known(self) -> bool:
        """True when this platform's <errno.h> defines the number."""
        return bool(self.name)

    @property
    def names(self) -> tuple[str, ...]:
        """The primary name followed by the aliases."""
        return (self.name, *self.aliases) if self.name else ()

    def as_dict(self) -> dict[str, object]:
        """Return the fields as JSON-ready values (enums as their strings)."""
        return {
            "code": self.code,
            "name": self.name,
            "aliases": list(self.aliases),
            "known": self.known,
            "message": self.message,
            "category": self.category.value,
            "retryable": self.retryable,
            "action": self.action.value,
            "meaning": self.meaning,
            "advice": self.advice,
        }


# --- pysockopt's own explanations, keyed by name (numbers differ across platforms)


@dataclass(frozen=True, slots=True)
class _Explanation:
    category: ErrorCategory
    retryable: bool
    action: Action
    meaning: str
    advice: str


#: Categories whose errors mean "this connection is gone" when not retryable.
_CONNECTION_LOST: Final = frozenset({
    ErrorCategory.TIMEOUT, ErrorCategory.PEER_RESET, ErrorCategory.PEER_CLOSED,
    ErrorCategory.REFUSED, ErrorCategory.UNREACHABLE,
})

_EXPLAINED: dict[str, _Explanation] = {}


def _explain(names: str, category: ErrorCategory, meaning: str, advice: str, *,
             retryable: bool = False, action: Action | None = None) -> None:
    if action is None:
        action = (Action.RETRY if retryable else
                  Action.RECONNECT if category in _CONNECTION_LOST else Action.GIVE_UP)
    entry = _Explanation(category, retryable, action, meaning, advice)
    for name in names.split():
        _EXPLAINED[name] = entry


_C = ErrorCategory

# Not failures: the operation is not finished yet.
_explain(
    "EAGAIN EWOULDBLOCK", _C.WOULD_BLOCK,
    "The socket is non-blocking and the call would have to wait: recv() has no data yet, "
    "send() has no room left in the send buffer, accept() has no pending connection. This is "
    "not an error. A blocking socket with SO_RCVTIMEO/SO_SNDTIMEO reports an expired timeout "
    "the same way. For connect() on a non-blocking Unix socket it means the listener's backlog "
    "is full.",
    "Wait until the socket is readable (recv, accept) or writable (send), with select, poll, "
    "epoll or an event loop, then call again; selectors and asyncio do exactly this. From "
    "send() it is backpressure: the peer reads slower than you write, so stop producing until "
    "the socket is writable instead of buffering without limit. Python raises BlockingIOError.",
    retryable=True)
_explain(
    "EINTR", _C.INTERRUPTED,
    "A signal handler ran while a blocking call (recv, send, accept, connect, poll, "
    "epoll_wait) was waiting, and the kernel returned early. Nothing is wrong with the socket. "
    "Since Python 3.5 (PEP 475) Python retries these calls itself, so Python code only sees "
    "InterruptedError when the signal handler raised an exception.",
    "Call again, with whatever time is left of your timeout. An interrupted connect() is "
    "different: the handshake goes on in the background, so do not call connect() again (it "
    "would fail with EALREADY); wait for writability and read SO_ERROR, as after EINPROGRESS.",
    retryable=True)
_explain(
    "EINPROGRESS", _C.IN_PROGRESS,
    "A non-blocking connect() sent the SYN and cannot complete at once. Not an error: the "
    "outcome arrives later.",
    "Wait until the socket is writable (select, poll, epoll), then read the outcome with "
    "getsockopt(SOL_SOCKET, SO_ERROR): 0 means connected, anything else is the errno connect() "
    "would have returned (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...). sock.connect_ex() "
    "returns it as a number; asyncio's loop.sock_connect() does all of this for you.",
    retryable=True)
_explain(
    "EALREADY", _C.IN_PROGRESS,
    "connect() was called again while an earlier non-blocking (or interrupted) connect() on "
    "this socket is still in progress.",
    "Do not call connect() again: wait until the socket is writable, then read SO_ERROR for "
    "the outcome, as after EINPROGRESS.",
    retryable=True)

# The connection is gone.
_explain(
    "ETIMEDOUT", _C.TIMEOUT,
    "The kernel gave up on the connection. From connect(): the SYNs went unanswered "
    "(net.ipv4.tcp_syn_retries, about 2 minutes on Linux): the host is down, a firewall drops "
    "packets silently, or the address is wrong. From recv() or send() on an established "
    "connection, a dead peer: keepalive probes went unanswered (after idle + interval * count "
    "seconds, or with TCP_USER_TIMEOUT set at the first probe past the user timeout), "
    "TCP_USER_TIMEOUT expired with data unacknowledged, or retransmissions ran out "
    "(net.ipv4.tcp_retries2, about 15 minutes): the peer vanished without FIN or RST (crash, "
    "power loss, cable or network cut, NAT or firewall state expired). With data in flight "
    "Linux often reports EHOSTUNREACH or ENETUNREACH for the same abort instead.",
    "The connection is dead: close it, and reconnect with back-off. To find dead peers in "
    "seconds rather than hours, set keepalive and TCP_USER_TIMEOUT (pysockopt keepalive "
    "--detect 30); to bound connect(), give it a timeout instead of waiting for the kernel's. "
    "Python's own deadline (sock.settimeout, asyncio.wait_for) raises TimeoutError without an "
    "errno: that is your timeout, not this one.")
_explain(
    "ECONNRESET", _C.PEER_RESET,
    "The peer answered with RST, the abrupt end of a TCP connection: its process crashed or "
    "was killed, its host rebooted and no longer knows the connection, it closed the socket "
    "with unread data in its receive buffer or with SO_LINGER set to 0, or a load balancer, "
    "NAT or firewall dropped the connection's state and reset it. Data not yet read by the "
    "peer is lost. This is the typical 'connection reset by peer'.",
    "Close the socket. A client reconnects, and repeats the request only if it is idempotent: "
    "it may or may not have been processed. Servers see this whenever clients vanish: log it "
    "quietly, not as an error. A reset on the first send after a long idle period usually means "
    "a middlebox forgot the connection: keepalive with an idle time below its timeout prevents "
    "that.")
_explain(
    "ECONNABORTED", _C.PEER_RESET,
    "The connection was aborted on this host. From accept(): a queued connection was reset "
    "by its client before it was accepted (BSD and macOS report it this way; Linux hands the "
    "connection over and its first recv() fails with ECONNRESET). On Linux an established "
    "socket gets it when it is destroyed locally, e.g. by `ss -K` (SOCK_DESTROY).",
    "In an accept loop it concerns that one connection, not the listener: accept again "
    "(asyncio does; triage(exc, accepting=True) says retry). On a connected socket the "
    "connection is gone: close it and reconnect.")
_explain(
    "ENETRESET", _C.PEER_RESET,
    "The network dropped the connection: keepalive found the peer unreachable while an "
    "operation was in progress. Windows and some BSDs report it this way; Linux reports a "
    "keepalive failure as ETIMEDOUT.",
    "Treat it like ECONNRESET: close the socket and reconnect.")
_explain(
    "EPROTO", _C.PEER_RESET,
    "Protocol error. Linux accept() returns it (like ENETDOWN, EHOSTUNREACH, ENONET, ...) as "
    "a pending error of the connection it was taking off the queue; some protocols also report "
    "a malformed message from the peer this way.",
    "In an accept loop: accept again, the listener is fine. Elsewhere the connection is "
    "unusable: close it and reconnect.")
_explain(
    "EPIPE", _C.PEER_CLOSED,
    "Write on a connection that can no longer send: the peer closed or reset it (the RST may "
    "already have been reported, or not yet read), or this side called shutdown(SHUT_WR). The "
    "kernel also sends SIGPIPE, which kills a process that neither ignores it nor passes "
    "MSG_NOSIGNAL. Python ignores SIGPIPE at start-up, so Python code gets BrokenPipeError "
    "instead; programs it starts with subprocess get the default, fatal, disposition back.",
    "Stop writing and close the socket; a client reconnects. recv() tells why: b'' for a "
    "clean close, ECONNRESET for a reset. In C, send with MSG_NOSIGNAL (SO_NOSIGPIPE on "
    "macOS) or ignore SIGPIPE. A command-line tool piped into `head` should exit quietly.")
_explain(
    "ENOTCONN", _C.PEER_CLOSED,
    "The socket is not connected: send(), recv(), getpeername() or shutdown() on a TCP "
    "socket whose connect() never succeeded (or was never called), or whose connection is "
    "already gone. macOS returns it from shutdown() when the peer has already closed.",
    "If connect() never completed, check its outcome (SO_ERROR after a non-blocking connect). "
    "If the connection died, close it and reconnect. ENOTCONN from shutdown() on a dead "
    "connection is harmless: ignore it and close().")
_explain(
    "ECONNREFUSED", _C.REFUSED,
    "Nothing accepts connections there: the host answered the SYN with RST because no socket "
    "listens on that port (service down, restarting, or wrong port), or a firewall rejects "
    "with RST or ICMP port-unreachable. For a Unix socket path: the socket file exists but no "
    "process listens on it. On a connected UDP socket: an earlier datagram drew an ICMP "
    "port-unreachable.",
    "Check the address and port, and that the service runs (`ss -ltn 'sport = :PORT'` on its "
    "host). If it may be restarting, reconnect with back-off: a refused connect() fails in "
    "microseconds, so a retry loop without back-off spins.")
_explain(
    "ENETUNREACH", _C.UNREACHABLE,
    "No route to the destination network: this host's routing table has no route for it (no "
    "default route, or an IPv6 address on a host without IPv6 connectivity), or a router "
    "answered ICMP network-unreachable. On an established connection it reports a dead peer: "
    "when TCP_USER_TIMEOUT or the retransmissions give up on unacknowledged data, the abort "
    "reports a router's pending network-unreachable error instead of ETIMEDOUT. Linux "
    "accept() also returns it as a pending error of a new connection. Python raises a plain "
    "OSError, not a ConnectionError subclass.",
    "Check `ip route get ADDRESS`. For a name with several addresses try the next one "
    "(socket.create_connection does). Reconnect with back-off if the network may come back "
    "(an interface or VPN coming up).")
_explain(
    "EHOSTUNREACH", _C.UNREACHABLE,
    "The destination host cannot be reached: on the local network nobody answered ARP or "
    "neighbour discovery (host down or wrong address), a router returned ICMP host-"
    "unreachable, or a firewall rule rejected the packet (REJECT with icmp-host-prohibited). "
    "On an established connection it is how Linux usually reports a dead peer with data in "
    "flight: when TCP_USER_TIMEOUT or the retransmissions give up on unacknowledged data, the "
    "abort reports the pending soft error of the failed neighbour lookup (or a router's ICMP "
    "host-unreachable) instead of ETIMEDOUT; an idle connection dropped by keepalive gets "
    "ETIMEDOUT. Linux accept() also returns it as a pending error of a new connection. "
    "Python raises a plain OSError, not a ConnectionError subclass, so `except TimeoutError` "
    "misses it.",
    "Check that the host is up and the address is right (`ip neigh`, `ip route get "
    "ADDRESS`), and the firewalls on the way. Reconnect with back-off if the host may come "
    "back.")
_explain(
    "ENETDOWN", _C.UNREACHABLE,
    "The network interface the route uses is down. Linux accept() also returns it as a "
    "pending error of a new connection.",
    "Check `ip link`; reconnect with back-off once the interface is up. In an accept loop, "
    "accept again.")
_explain(
    "EHOSTDOWN", _C.UNREACHABLE,
    "The destination host is known to be down (some stacks report this for a neighbour that "
    "stopped answering; Linux accept() may return it as a pending error of a new connection).",
    "Reconnect with back-off, or try another host. In an accept loop, accept again.")
_explain(
    "ENONET", _C.UNREACHABLE,
    "This machine is not on the network. Linux accept() may return it as a pending error of a "
    "new connection.",
    "In an accept loop, accept again; otherwise check the network configuration.")

# The local address.
_explain(
    "EADDRINUSE", _C.ADDRESS,
    "The address and port are taken. From bind() or listen(): another socket already listens "
    "there, or, without SO_REUSEADDR, connections left in TIME_WAIT by the previous run of the "
    "server still hold the port. From connect() after bind() to a fixed source port: that "
    "4-tuple is in use.",
    "Find the owner: `ss -ltnp 'sport = :PORT'`. Set SO_REUSEADDR on listeners before bind() "
    "(socket.create_server and asyncio do) so TIME_WAIT from the last run does not block a "
    "restart; use SO_REUSEPORT only to share a port on purpose. For outgoing connections do not "
    "bind() a source port; let the kernel choose one.")
_explain(
    "EADDRNOTAVAIL", _C.ADDRESS,
    "'Cannot assign requested address'. From bind(): the IP address is not configured on any "
    "interface of this host (a typo, an address not up yet, a container without it). From "
    "connect(): no ephemeral port is free for that destination, usually because many short "
    "outgoing connections left thousands of sockets in TIME_WAIT "
    "(net.ipv4.ip_local_port_range sets how many ports there are).",
    "For bind(): check `ip addr`; IP_FREEBIND (or net.ipv4.ip_nonlocal_bind) allows binding an "
    "address that appears later. For connect(): count TIME_WAIT sockets (`ss -tan state "
    "time-wait | wc -l`), reuse connections (connection pools, HTTP keep-alive), widen "
    "ip_local_port_range, enable net.ipv4.tcp_tw_reuse. Retrying after a back-off can succeed: "
    "ports are freed as TIME_WAIT expires (60 s on Linux).",
    action=Action.RECONNECT)
_explain(
    "ENOENT", _C.ADDRESS,
    "No such file or directory. For sockets: connect() to a Unix socket path where no socket "
    "file exists (the server is not running, or removed its socket), or bind() to a path in a "
    "directory that does not exist.",
    "Check the path. A client whose server may still be starting reconnects with back-off; "
    "for bind(), create the directory first.",
    action=Action.RECONNECT)

# Out of something.
_explain(
    "EMFILE", _C.RESOURCE,
    "This process reached its open-file limit (RLIMIT_NOFILE, `ulimit -n`): socket(), accept() "
    "and the socket behind connect() each need a descriptor. Often a leak: sockets that are "
    "never closed (look for piles of CLOSE_WAIT).",
    "Look for leaks first (`ls /proc/PID/fd | wc -l`, CLOSE_WAIT in `ss -tanp`), then raise "
    "the soft limit (resource.setrlimit, up to the hard limit). In an accept loop, back off "
    "briefly and retry: the pending connection stays queued and the listener stays readable, "
    "so a loop that retries at once spins at 100% CPU.",
    retryable=True)
_explain(
    "ENFILE", _C.RESOURCE,
    "The system-wide limit on open files (fs.file-max) is reached: no process can open a "
    "socket until others close some.",
    "Find the process holding the most descriptors, raise fs.file-max if the load is real, and "
    "back off before retrying.",
    retryable=True)
_explain(
    "ENOBUFS", _C.RESOURCE,
    "The kernel could not get buffer space for the operation: socket memory is under pressure "
    "(net.ipv4.tcp_mem, net.core.*mem_max), a device transmit queue is full (UDP and raw "
    "sends), or a netlink socket's receive buffer overflowed. Usually transient.",
    "Back off briefly and retry. If it persists, look at socket memory (`ss -tm`, "
    "/proc/net/sockstat, `nstat`) and the sysctls above.",
    retryable=True)
_explain(
    "ENOMEM", _C.RESOURCE,
    "The kernel could not allocate memory for the socket operation (memory pressure or a "
    "memory cgroup limit). setsockopt() also returns it for an option buffer larger than "
    "net.core.optmem_max, which fails every time.",
    "Back off and retry for transient pressure; if it persists, check memory and cgroup "
    "limits, and the size of what you pass to setsockopt().",
    retryable=True)
_explain(
    "ENOSPC", _C.RESOURCE,
    "No space left. In socket code: bind() of a Unix socket on a full filesystem, sendfile() "
    "or splice() into a full disk, or epoll_ctl() beyond fs.epoll.max_user_watches (Linux).",
    "Free space or raise the limit; until then a retry fails the same way.")
_explain(
    "ETOOMANYREFS", _C.RESOURCE,
    "sendmsg() with SCM_RIGHTS on a Unix socket: too many descriptors are in flight (sent but "
    "not yet received) for this user.",
    "Let the receiver catch up, then retry; close your copies of descriptors once sent.",
    retryable=True)

# The call is wrong.
_explain(
    "EBADF", _C.INVALID,
    "Not an open descriptor (or not open for this operation): the socket was already closed, "
    "often by another thread or by a `with` block, or a stale descriptor number was used.",
    "A bug in who owns the socket: find who closed it. Never close a socket while another "
    "thread is blocked on it; call shutdown() to wake that thread first. A Python socket "
    "object has fileno() == -1 after close().")
_explain(
    "ENOTSOCK", _C.INVALID,
    "The descriptor is not a socket (a file, pipe or terminal), often a number reused after "
    "the socket was closed.",
    "Check what the descriptor is (`ls -l /proc/PID/fd/N`) and who closed the socket.")
_explain(
    "EINVAL", _C.INVALID,
    "An argument is invalid for this socket or its state: accept() on a socket that is not "
    "listening, listen() on a connected socket, bind() on an already bound socket, a keepalive "
    "value out of range (Linux: TCP_KEEPIDLE and TCP_KEEPINTVL 1..32767, TCP_KEEPCNT 1..127), "
    "a negative TCP_USER_TIMEOUT, an address length that does not match the family.",
    "Fix the call: retrying fails the same way. pysockopt's KeepaliveConfig checks values "
    "before any syscall.")
_explain(
    "EFAULT", _C.INVALID,
    "A pointer argument points outside the process's memory: a bug in C code (a wrong buffer "
    "or length given to recv, send, getsockopt or setsockopt). Pure Python code cannot cause it.",
    "Fix the C code: buffer sizes and lifetimes.")
_explain(
    "EDESTADDRREQ", _C.INVALID,
    "send() on a datagram socket that has no destination: it was not connect()ed and no "
    "address was given.",
    "Use sendto() with an address, or connect() the socket first.")
_explain(
    "EMSGSIZE", _C.INVALID,
    "The message is too large to send in one piece: a UDP datagram above 65507 bytes (IPv4), "
    "or above the path MTU when fragmentation is not allowed (IP_MTU_DISCOVER set to DO).",
    "Send less per datagram: keep UDP payloads below the path MTU (getsockopt IP_MTU on a "
    "connected UDP socket tells it).")
_explain(
    "EPROTOTYPE", _C.INVALID,
    "The protocol does not fit the socket type (IPPROTO_UDP with SOCK_STREAM), or connect() "
    "to a Unix socket of another type (SOCK_DGRAM against SOCK_STREAM).",
    "Use a matching type and protocol, as getaddrinfo() returns them.")
_explain(
    "ENOPROTOOPT", _C.INVALID,
    "The option is not supported at that level for this socket: TCP_INFO or TCP_KEEPIDLE on a "
    "UDP or Unix socket, or an option this kernel does not know. Linux accept() also returns "
    "it as a pending error of a new connection.",
    "Check the socket's type (SO_TYPE) and protocol; detect features (pysockopt's HAS_* "
    "constants) instead of assuming them. In an accept loop, accept again.")
_explain(
    "EPROTONOSUPPORT", _C.INVALID,
    "The protocol is not supported in this address family or not available in this kernel "
    "(IPPROTO_SCTP without the sctp module, IPPROTO_MPTCP with MPTCP disabled).",
    "Load the module or enable the feature, or fall back to another protocol.")
_explain(
    "ESOCKTNOSUPPORT", _C.INVALID,
    "socket() asked for a socket type this address family does not provide (SOCK_SEQPACKET "
    "or SOCK_RDM with AF_INET, for instance), or a type this kernel does not know.",
    "Use a type the family supports (SOCK_STREAM or SOCK_DGRAM for IP), as getaddrinfo() "
    "returns them.")
_explain(
    "EOPNOTSUPP ENOTSUP", _C.INVALID,
    "The operation is not supported on this socket: listen() or accept() on a datagram "
    "socket, a flag (MSG_OOB) the protocol lacks. Linux defines ENOTSUP and EOPNOTSUPP as the "
    "same number; Linux accept() may also return it as a pending error of a new connection.",
    "Use an operation the socket type supports. In an accept loop, accept again.")
_explain(
    "EPFNOSUPPORT", _C.INVALID,
    "socket() asked for a protocol family this kernel does not support: it was built without "
    "it, or its module is not loaded (AF_TIPC, AF_RDS and the like).",
    "Load the module or use another family; for IP, AF_INET and AF_INET6 are always there.")
_explain(
    "EAFNOSUPPORT", _C.INVALID,
    "The address family is not supported: an AF_INET6 socket on a host with IPv6 disabled, "
    "an address of one family given to a socket of another, or a family the kernel lacks.",
    "Create the socket with the family of the address getaddrinfo() returned; where IPv6 is "
    "disabled, fall back to IPv4.")
_explain(
    "EISCONN", _C.INVALID,
    "connect() on a socket that is already connected. After a non-blocking connect(), a "
    "second connect() that fails with EISCONN means the first one succeeded.",
    "Connect once; learn a non-blocking connect's outcome from SO_ERROR.")
_explain(
    "ESHUTDOWN", _C.INVALID,
    "Send after this side shut down its sending direction with shutdown(SHUT_WR) (Linux "
    "reports EPIPE for TCP instead).",
    "Do not write after shutdown(SHUT_WR); sending again needs a new connection.")
_explain(
    "ENODEV", _C.INVALID,
    "No such device: SO_BINDTODEVICE, IP_MULTICAST_IF or an IPv6 scope id names a network "
    "interface that does not exist.",
    "Check the interface name or index (`ip link`).")
_explain(
    "ENOSYS", _C.INVALID,
    "The system call is not implemented by this kernel, or a seccomp policy (common in "
    "containers) blocks it and answers ENOSYS: accept4, sendmmsg, io_uring and friends on old "
    "kernels or in sandboxes.",
    "Detect the feature and fall back to the older call.")

# Not allowed.
_explain(
    "EPERM", _C.PERMISSION,
    "Operation not permitted: a firewall rule (nftables or iptables DROP in the OUTPUT chain) "
    "blocked connect() or sendto(); an option that needs CAP_NET_ADMIN or CAP_NET_RAW (SO_MARK, "
    "IP_TRANSPARENT, SO_PRIORITY above 6, raw sockets) without it; a seccomp or LSM policy. "
    "Linux accept() returns it when firewall rules forbid the new connection.",
    "Check firewall rules (`nft list ruleset`, `iptables -S OUTPUT`) and the process's "
    "capabilities; retrying does not help. In an accept loop, accept again.")
_explain(
    "EACCES", _C.PERMISSION,
    "Permission denied: bind() to a port below net.ipv4.ip_unprivileged_port_start (1024) "
    "without CAP_NET_BIND_SERVICE, sending to a broadcast address without SO_BROADCAST, a "
    "Unix socket path (or its directory) without access rights, or an SELinux or AppArmor "
    "denial.",
    "Use a higher port (or grant CAP_NET_BIND_SERVICE, or let systemd pass the socket); set "
    "SO_BROADCAST before broadcasting; fix the Unix socket's permissions. Retrying does not "
    "help.")

del _C

#: Errors that Linux accept() passes on from the connection it was taking off the queue
#: (accept(2)), plus ECONNABORTED and ECONNRESET, which BSD-derived systems return for a
#: connection reset in the queue: that connection is gone, the listener is fine.
_ACCEPT_AGAIN: Final = frozenset({
    "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENOTSUP", "ENETUNREACH", "EPERM", "ECONNRESET",
})

_OTHER_ADVICE: Final = (
    "Not an error that socket calls usually return. Find the call that failed (the traceback, "
    "or `strace -f -e trace=%network,%file`) and read the ERRORS section of its man page."
)


# --- the platform's table, read from the extension once


def _message(code: int) -> str:
    try:
        return os.strerror(code)
    except (ValueError, OverflowError):
        return f"Unknown error {code}"


def _build(entries: Iterable[tuple[str, int, bool]]) -> tuple[dict[int, ErrnoInfo],
                                                                   dict[str, ErrnoInfo]]:
    groups: dict[int, list[tuple[str, bool]]] = {}
    for name, code, alias in entries:
        groups.setdefault(code, []).append((name, alias))
    by_code: dict[int, ErrnoInfo] = {}
    by_name: dict[str, ErrnoInfo] = {}
    for code in sorted(groups):
        names = sorted(groups[code])
        python_name = std_errno.errorcode.get(code, "")
        if any(n == python_name for n, _ in names):
            primary = python_name
        else:  # Python does not know this number: prefer a name defined as a number
            primary = next((n for n, alias in names if not alias), names[0][0])
        aliases = tuple(n for n, _ in names if n != primary)
        message = _message(code)
        explained = next((_EXPLAINED[n] for n in (primary, *aliases) if n in _EXPLAINED), None)
        if explained is None:
            info = ErrnoInfo(
                code, primary, message, ErrorCategory.OTHER, False,
                f"{primary} means {message!r} (the platform's strerror). Socket calls rarely "
                "return it; it usually comes from another call in the same code path (a file, "
                "process or device operation).",
                _OTHER_ADVICE, Action.GIVE_UP, aliases)
        else:
            info = ErrnoInfo(code, primary, message, explained.category, explained.retryable,
                             explained.meaning, explained.advice, explained.action, aliases)
        by_code[code] = info
        for name in info.names:
            by_name[name] = info
    return by_code, by_name


def _native_entries() -> list[tuple[str, int, bool]]:
    table = lib.pso_errno_table
    return [(ffi.string(table[i].name).decode("ascii"), int(table[i].code), bool(table[i].alias))
            for i in range(lib.pso_errno_count)]


_BY_CODE, _BY_NAME = _build(_native_entries())


def _unknown(code: int) -> ErrnoInfo:
    negated = _BY_CODE.get(-code)
    if negated is not None:
        why = (f"It looks like a negated errno (C functions return -errno): {-code} is "
               f"{negated.name}, {negated.message!r}.")
    else:
        why = ("It may come from another platform (errno numbers differ: ECONNRESET is 104 "
               "on Linux, 54 on macOS), or not be an errno at all (a getaddrinfo EAI_* code, "
               "an SSL error code, an exit status).")
    return ErrnoInfo(
        code, "", _message(code), ErrorCategory.OTHER, False,
        f"errno {code} is not defined on this platform ({sys.platform}). {why}",
        "Look it up on the platform that produced it, or by name if the log has one "
        "(pysockopt errno --search WORD).",
        Action.GIVE_UP, ())


_C_INT_MIN: Final = -(2**31)
_C_INT_MAX: Final = 2**31 - 1


def _outside_c_int(code: int) -> ErrnoInfo:
    # Input validation: no errno is outside a C int, and such a number is never formatted in
    # full (str() of a number over 4300 digits raises ValueError).
    size = f"a {code.bit_length()}-bit {'negative ' if code < 0 else ''}number"
    return ErrnoInfo(
        code, "", "Unknown error (outside the C int range)", ErrorCategory.OTHER, False,
        f"{size} is not defined on this platform, nor on any: errno values are C ints "
        f"({_C_INT_MIN}..{_C_INT_MAX}), so it came from somewhere else (a corrupted value, a "
        "counter, a wrong field).",
        "Find where the number came from; it names no system error.", Action.GIVE_UP, ())


def errno_info(x: int | str | OSError) -> ErrnoInfo:
    """Explain an errno given as a number, a name (any case) or an OSError.

    A number this platform does not define gives an ErrnoInfo saying so (``known`` False); a
    name it does not define raises :class:`UnknownErrnoName` (a LookupError) listing the
    closest names. An OSError without an errno, or whose ``errno`` is not an errno value
    (socket.gaierror holds an EAI_* code, ssl.SSLError an SSL library code), is a ValueError:
    :func:`triage` handles those.
    """
    if isinstance(x, bool):
        raise TypeError("errno_info() takes an errno number, name or OSError, not bool")
    if isinstance(x, int):
        if not _C_INT_MIN <= x <= _C_INT_MAX:
            return _outside_c_int(int(x))
        return _BY_CODE.get(x) or _unknown(int(x))
    if isinstance(x, str):
        key = x.strip().upper()
        info = _BY_NAME.get(key)
        if info is None:
            raise UnknownErrnoName(x, _closest(key))
        return info
    if isinstance(x, OSError):
        foreign = _foreign_code(x)
        if foreign:
            raise ValueError(f"{type(x).__name__}.errno is {foreign}, not an errno")
        if x.errno is None:
            raise ValueError(f"this {type(x).__name__} carries no errno: {x}")
        return errno_info(x.errno)
    raise TypeError(f"errno_info() takes an errno number, name or OSError, not "
                    f"{type(x).__name__}")


def _closest(key: str) -> tuple[str, ...]:
    names = list(_BY_NAME)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    if not close and not key.startswith("E"):
        close = difflib.get_close_matches("E" + key, names, n=3, cutoff=0.6)
    contains = [n for n in sorted(names) if key and key in n and n not in close]
    return tuple(close + contains)[:5]


def _foreign_code(exc: OSError) -> str:
    """Say what ``exc.errno`` holds when it is not an errno ("" when it is one or None)."""
    if isinstance(exc, socket.gaierror):
        return "a getaddrinfo EAI_* code"
    if isinstance(exc, socket.herror):
        return "an h_errno resolver code"
    ssl = sys.modules.get("ssl")  # an SSLError exists only once ssl was imported
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return "an SSL library error code"
    return ""


def errno_table() -> tuple[ErrnoInfo, ...]:
    """Every errno this platform defines, one entry per number, in numeric order."""
    return tuple(_BY_CODE.values())


def errno_search(text: str) -> tuple[ErrnoInfo, ...]:
    """Errnos whose name, alias, message or meaning contains every word of ``text``.

    Case-insensitive; results in numeric order. ``errno_search("reset")`` finds ECONNRESET,
    ENETRESET and the errnos whose explanation mentions a reset.
    """
    words = text.lower().split()
    if not words:
        return ()
    found = []
    for info in _BY_CODE.values():
        haystack = " ".join((*info.names, info.message, info.meaning)).lower()
        if all(w in haystack for w in words):
            found.append(info)
    return tuple(found)


# --- error handlers


@dataclass(frozen=True, slots=True)
class Triage:
    """What an error handler should do with an exception from socket code.

    ``action`` says retry, reconnect or give up; ``category`` what kind of failure it is;
    ``reason`` why, in one line; ``info`` the errno explained (None when the exception carries
    no errno, e.g. a Python-level timeout or a TLS error).
    """

    action: Action
    category: ErrorCategory
    reason: str
    info: ErrnoInfo | None

    def as_dict(self) -> dict[str, object]:
        """Return the fields as JSON-ready values."""
        return {
            "action": self.action.value,
            "category": self.category.value,
            "reason": self.reason,
            "errno": None if self.info is None else self.info.as_dict(),
        }


_HOW: Final[Mapping[tuple[ErrorCategory, Action], str]] = {
    (ErrorCategory.WOULD_BLOCK, Action.RETRY): "wait until the socket is ready, then call again",
    (ErrorCategory.INTERRUPTED, Action.RETRY): "call again",
    (ErrorCategory.IN_PROGRESS, Action.RETRY): "wait until writable, then read SO_ERROR",
    (ErrorCategory.RESOURCE, Action.RETRY): "back off briefly, then call again",
    (ErrorCategory.TIMEOUT, Action.RECONNECT):
        "the kernel gave up on the peer (on an established connection: a dead peer, found by "
        "keepalive or TCP_USER_TIMEOUT); this connection is unusable: close it and reconnect "
        "with back-off",
    (ErrorCategory.UNREACHABLE, Action.RECONNECT):
        "no route to the peer (on an established connection: a dead peer, the user timeout or "
        "retransmissions gave up and reported the pending unreachable error); this connection "
        "is unusable: close it and reconnect with back-off",
}

#: Python's exception classes (PEP 3151) for an OSError raised without an errno, e.g. asyncio's
#: ConnectionResetError('Connection lost').
_CLASS_ERRNO: Final = (
    (BrokenPipeError, "EPIPE"),
    (ConnectionAbortedError, "ECONNABORTED"),
    (ConnectionRefusedError, "ECONNREFUSED"),
    (ConnectionResetError, "ECONNRESET"),
    (BlockingIOError, "EAGAIN"),
    (InterruptedError, "EINTR"),
    (PermissionError, "EACCES"),
)


def _from_info(info: ErrnoInfo, accepting: bool, source: str) -> Triage:
    label = f"{info.name or f'errno {info.code}'} ({info.message}){source}"
    if accepting and any(n in _ACCEPT_AGAIN for n in info.names):
        return Triage(Action.RETRY, info.category,
                      f"{label}: accept() reports errors of the connection it was taking off "
                      "the queue; that connection is gone, the listener is fine: accept again",
                      info)
    how = _HOW.get((info.category, info.action)) or {
        Action.RETRY: "call again",
        Action.RECONNECT: "this connection is unusable: close it and reconnect with back-off",
        Action.GIVE_UP: "retrying fails the same way: fix the cause",
    }[info.action]
    return Triage(info.action, info.category, f"{label}: {how}", info)


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    # Python 3.10: asyncio.TimeoutError and concurrent.futures.TimeoutError are classes of
    # their own; from 3.11 both are aliases of TimeoutError.
    for module in ("asyncio", "concurrent.futures"):
        found = sys.modules.get(module)
        if found is not None and isinstance(exc, found.TimeoutError):
            return True
    return False


def _tls(exc: OSError) -> Triage | None:
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(exc, ssl.SSLError):
        return None
    if isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
        return Triage(Action.RETRY, ErrorCategory.WOULD_BLOCK,
                      f"{type(exc).__name__}: the TLS layer needs the socket to be "
                      "readable/writable first; wait, then call again", None)
    if isinstance(exc, (ssl.SSLZeroReturnError, ssl.SSLEOFError)):
        return Triage(Action.RECONNECT, ErrorCategory.PEER_CLOSED,
                      f"{type(exc).__name__}: the peer closed the TLS connection; close it "
                      "and reconnect", None)
    if isinstance(exc, ssl.SSLSyscallError):
        return Triage(Action.RECONNECT, ErrorCategory.PEER_RESET,
                      f"{type(exc).__name__}: the connection under TLS failed; close it and "
                      "reconnect", None)
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc.strerror or exc
        return Triage(Action.GIVE_UP, ErrorCategory.TLS,
                      f"certificate verification failed ({why}); reconnecting "
                      "fails the same way: fix the trust store, host name or certificate", None)
    return Triage(Action.GIVE_UP, ErrorCategory.TLS,
                  f"TLS error {exc.reason or exc}: usually configuration (protocol versions, "
                  "ciphers, TLS spoken to a plain-TCP port); reconnecting repeats it", None)


#: How much a verdict found in an exception graph says: a real errno (or the TLS layer, the
#: resolver) beats an errno named in a library's message, which beats one guessed from an
#: exception class or a timeout type; an OSError without anything is only the fallback.
_ERRNO, _TEXT, _CLASS, _NOTHING = range(4)

#: Errnos a client library may name only in its message (libpq: "could not receive data from
#: server: Connection timed out"; gRPC's status details), looked for by their strerror text.
_TEXT_ERRNOS: Final = ("ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "ECONNRESET",
                       "ECONNREFUSED", "ECONNABORTED", "EPIPE")

#: What client libraries say, without an errno, when the server's side of the connection is
#: gone (libpq, redis-py, gRPC).
_LOST_TEXT: Final = ("server closed the connection unexpectedly",
                     "connection has been closed unexpectedly", "connection closed by server",
                     "no connection to the server", "the connection is closed",
                     "connection was closed", "connection is lost", "connection lost",
                     "socket closed")

#: Client libraries' own timeout classes, by (top-level package, class name in the MRO); they
#: do not subclass TimeoutError. Matched by name: triage imports none of them.
_LIBRARY_TIMEOUTS: Final = frozenset({
    ("requests", "Timeout"), ("urllib3", "TimeoutError"), ("httpx", "TimeoutException"),
    ("httpcore", "TimeoutException"), ("redis", "TimeoutError"),
    ("aiohttp", "ServerTimeoutError"), ("psycopg", "ConnectionTimeout"),
})

#: Client libraries' classes for "the connection is gone", raised without an errno.
_LIBRARY_LOST: Final = frozenset({
    ("redis", "ConnectionError"), ("aiohttp", "ServerDisconnectedError"),
    ("aiohttp", "ClientConnectionResetError"), ("asyncpg", "ConnectionDoesNotExistError"),
    ("httpx", "RemoteProtocolError"), ("httpcore", "RemoteProtocolError"),
})


def _library_class(exc: BaseException, known: frozenset[tuple[str, str]]) -> str | None:
    for cls in type(exc).__mro__:
        if (cls.__module__.partition(".")[0], cls.__name__) in known:
            return f"{cls.__module__}.{cls.__name__}"
    return None


def _foreign(exc: BaseException) -> bool:
    """Return True for an exception a library defined (not Python's own)."""
    return type(exc).__module__ not in ("builtins", "socket", "ssl", "asyncio.exceptions",
                                        "concurrent.futures._base", "asyncio")


def _from_text(exc: BaseException, accepting: bool) -> Triage | None:
    text = _text(exc).lower()
    for name in _TEXT_ERRNOS:
        info = _BY_NAME.get(name)
        if info is not None and info.message and info.message.lower() in text:
            return _from_info(info, accepting, f", named in the {type(exc).__name__} message")
    for phrase in _LOST_TEXT:
        if phrase in text:
            return Triage(Action.RECONNECT, ErrorCategory.PEER_CLOSED,
                          f"{type(exc).__name__} says {phrase!r}: the connection is gone; "
                          "close it and reconnect", None)
    return None


def _grpc(exc: BaseException) -> Triage | None:
    """Return the verdict for a grpc.RpcError's UNAVAILABLE or DEADLINE_EXCEEDED status."""
    if type(exc).__module__.partition(".")[0] != "grpc":
        return None
    code = getattr(exc, "code", None)
    try:
        status = getattr(code(), "name", None) if callable(code) else None
    except Exception:  # a foreign code() that fails is no verdict
        return None
    if status == "UNAVAILABLE":
        return Triage(Action.RECONNECT, ErrorCategory.PEER_RESET,
                      "gRPC UNAVAILABLE: the connection to the server failed (the channel "
                      "reconnects by itself); call again with back-off", None)
    if status == "DEADLINE_EXCEEDED":
        return Triage(Action.RECONNECT, ErrorCategory.TIMEOUT,
                      "gRPC DEADLINE_EXCEEDED: the call's deadline expired; call again with "
                      "back-off", None)
    return None


def _triage_one(exc: BaseException, accepting: bool) -> tuple[int, Triage] | None:
    """Return the verdict ``exc`` alone gives, with its strength (_ERRNO.._NOTHING)."""
    if isinstance(exc, OSError):
        tls = _tls(exc)
        if tls is not None:
            return _ERRNO, tls
        if isinstance(exc, socket.gaierror):
            again = exc.errno == getattr(socket, "EAI_AGAIN", None)
            return _ERRNO, Triage(
                Action.RETRY if again else Action.GIVE_UP, ErrorCategory.RESOLUTION,
                f"name resolution failed ({exc.strerror}): "
                + ("a temporary DNS failure; back off, then resolve again" if again
                   else "check the host name and the resolver configuration"), None)
        if isinstance(exc, socket.herror):
            return _ERRNO, Triage(Action.GIVE_UP, ErrorCategory.RESOLUTION,
                                  f"address lookup failed ({exc.strerror})", None)
        if isinstance(exc.errno, int) and not isinstance(exc.errno, bool):
            if not _C_INT_MIN <= exc.errno <= _C_INT_MAX:  # no errno: nothing to explain
                info = _outside_c_int(exc.errno)
                return _ERRNO, Triage(Action.GIVE_UP, ErrorCategory.OTHER,
                                      f"{type(exc).__name__} with {info.meaning}", info)
            return _ERRNO, _from_info(errno_info(exc.errno), accepting, "")
    if _foreign(exc):
        found = _grpc(exc) or _from_text(exc, accepting)
        if found is not None:
            return (_CLASS if found.info is None else _TEXT), found
        timeout = _library_class(exc, _LIBRARY_TIMEOUTS)
        if timeout is not None:
            return _CLASS, Triage(
                Action.RETRY if accepting else Action.RECONNECT, ErrorCategory.TIMEOUT,
                f"{timeout}: a timeout of the client library (its own deadline, or the "
                "kernel's found through the socket): the exchange is in an unknown state; "
                "close the connection and reconnect", None)
        lost = _library_class(exc, _LIBRARY_LOST)
        if lost is not None:
            return _CLASS, Triage(Action.RECONNECT, ErrorCategory.PEER_CLOSED,
                                  f"{lost}: the connection is gone; close it and reconnect",
                                  None)
    if isinstance(exc, OSError) and not _is_timeout(exc):
        # A timeout without errno is Python's own: handled below.
        for cls, name in _CLASS_ERRNO:
            if isinstance(exc, cls) and name in _BY_NAME:
                return _CLASS, _from_info(_BY_NAME[name], accepting,
                                          f", from the exception class {cls.__name__}")
        return _NOTHING, Triage(Action.GIVE_UP, ErrorCategory.OTHER,
                                f"{type(exc).__name__} without an errno ({_text(exc)}): raised "
                                "by Python or a library, not by a system call", None)
    if _is_timeout(exc):
        if accepting:
            return _CLASS, Triage(Action.RETRY, ErrorCategory.TIMEOUT,
                                  "your own deadline expired while waiting for a connection; "
                                  "the listener is fine: accept again", None)
        return _CLASS, Triage(
            Action.RECONNECT, ErrorCategory.TIMEOUT,
            "your own deadline expired (settimeout, asyncio.wait_for), not the kernel's: the "
            "exchange is in an unknown state (a late reply could be read as the answer to the "
            "next request), so close the connection and reconnect", None)
    if isinstance(exc, EOFError):  # includes asyncio.IncompleteReadError
        return _CLASS, Triage(Action.RECONNECT, ErrorCategory.PEER_CLOSED,
                              f"{type(exc).__name__}: the peer closed the connection before "
                              "the data you expected arrived; close it and reconnect", None)
    return None


def _inner(exc: BaseException) -> list[BaseException]:
    """Return the exceptions ``exc`` wraps.

    Its cause and context, exceptions among its args (requests passes urllib3's there),
    urllib3's ``reason``, an exception group's members.
    """
    found: list[BaseException] = []
    for item in (exc.__cause__, exc.__context__, getattr(exc, "reason", None),
                 *getattr(exc, "args", ()), *(getattr(exc, "exceptions", None) or ())):
        if isinstance(item, BaseException) and item not in found:
            found.append(item)
    return found


def triage(exc: BaseException, *, accepting: bool = False) -> Triage:
    """Say whether to retry, reconnect or give up after ``exc`` was raised by socket code.

    Handles OSError and its subclasses by errno (or, without an errno, by class: asyncio's
    ``ConnectionResetError('Connection lost')``), Python-level timeouts (``socket.timeout``,
    ``TimeoutError``, ``asyncio.TimeoutError``), ssl errors, ``socket.gaierror``, and EOFError
    (asyncio's IncompleteReadError).

    Client libraries wrap the socket's error: requests' exceptions subclass OSError without
    an errno and carry urllib3's in their args, httpx and redis-py chain it as ``__cause__``,
    libpq (psycopg, psycopg2, SQLAlchemy) names it only in its message. So the exception's
    whole graph is searched, breadth first: ``__cause__``, ``__context__``, exceptions in
    its ``args``, urllib3's ``reason``, an exception group's members. The first real errno
    found decides; failing that, an errno named in a library's message (its strerror text);
    then an exception class (a client library's timeout types, requests' ``Timeout``, httpx's
    ``TimeoutException``, redis-py's ``TimeoutError``..., "connection gone" types such as
    redis-py's ``ConnectionError``, a gRPC ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` status).
    Anything else gives category OTHER and GIVE_UP.

    Pass ``accepting=True`` when ``exc`` came from accept(): errors of the connection being
    accepted (ECONNABORTED, and the pending network errors Linux passes on) then say RETRY,
    since the listener itself is fine.
    """
    if not isinstance(exc, BaseException):
        raise TypeError(f"triage() takes an exception, not {type(exc).__name__}")
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    best: tuple[int, BaseException, Triage] | None = None
    while queue and len(seen) < 32:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found = _triage_one(current, accepting)
        if found is not None and (best is None or found[0] < best[0]):
            best = (found[0], current, found[1])
            if found[0] == _ERRNO:
                break
        queue += _inner(current)
    if best is None:
        return Triage(Action.GIVE_UP, ErrorCategory.OTHER,
                      f"{type(exc).__name__} is not a socket error: {_text(exc)}", None)
    _, current, verdict = best
    if current is not exc:
        return Triage(verdict.action, verdict.category,
                      f"{type(exc).__name__} caused by {verdict.reason}", verdict.info)
    return verdict


def _text(exc: BaseException) -> str:
    # triage runs inside except blocks: an exception whose str() fails (a number too long to
    # print, a broken __str__) must not raise from there.
    try:
        return str(exc)
    except Exception:  # any failure of a foreign __str__ is the same to us
        return f"<{type(exc).__name__} that cannot be printed>"
