"""A running process's TCP sockets: audit their keepalive and change it, without a restart.

How: the process's descriptors are listed from /proc/PID/fd (``socket:[INODE]`` links) and
matched by inode to the kernel's socket records (sock_diag in our own network namespace, the
process's /proc/PID/net/tcp* in another one). Each socket's options are read through
pidfd_getfd(2) (Linux 5.6): it puts a duplicate of the process's descriptor into ours. The
duplicate is the same open socket, so getsockopt on it reads, and setsockopt on it changes,
the socket the process uses. It is closed as soon as its one job is done.

Permission is the kernel's: pidfd_getfd needs ptrace access to the process
(PTRACE_MODE_ATTACH_REALCREDS: root or CAP_SYS_PTRACE, or the same user where Yama's
ptrace_scope allows it), /proc/PID/fd needs the read mode of the same check. Where
pidfd_getfd is refused but the descriptors can be listed, what the socket records show (a
keepalive timer pending, and when it fires) is reported instead, marked as such.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from .._core import lib
from .._format import duration, printable, process
from .._sock import os_error
from ..keepalive import (
    KeepaliveConfig,
    KeepaliveReport,
    KeepaliveSettings,
    apply_keepalive,
    read_keepalive,
)
from ..tcpinfo import TcpState
from .connections import (
    Connection,
    Process,
    Timer,
    connections,
    parse_proc,
    parse_state,
    state_mask,
)
from .namespaces import NetnsPermissionError
from .owners import Unseen

__all__ = [
    "KeepaliveChange",
    "ProcessAudit",
    "ProcessSocket",
    "apply_keepalive_to_process",
    "audit_process",
    "process_sockets",
]

#: Every change made to another process is logged here, one line per socket (the CLI shows
#: them on stderr).
log: Final = logging.getLogger("pysockopt.live")

#: Where a socket's keepalive figures came from.
FROM_PIDFD: Final = "pidfd_getfd"
FROM_TIMER: Final = "timer"

_SOCKET_LINK: Final = "socket:["
#: PF_EXITING in /proc/PID/stat's flags (include/linux/sched.h): do_exit has begun.
_PF_EXITING: Final = 0x4


# --- the process


def _explain(err: OSError, pid: int, what: str) -> OSError:
    """Return ``err`` with a message saying what the kernel refused and why, same errno."""
    code = err.errno or errno.EIO
    if code in (errno.EPERM, errno.EACCES):
        why = (f"{what} of pid {pid} refused: the kernel's ptrace access check allows it to "
               "root (CAP_SYS_PTRACE) or to the process's own user, where Yama's "
               "kernel.yama.ptrace_scope permits; run as root or as that user")
    elif code == errno.ESRCH:
        why = f"{what}: pid {pid} has exited"
    elif code == errno.ENOSYS:
        why = f"{what}: this kernel has no pidfd_getfd (Linux 5.6+)"
    elif code == errno.ESTALE:
        why = (f"{what} of pid {pid}: the descriptor now holds another socket than the one "
               "listed (closed and reused meanwhile); left alone")
    else:
        why = f"{what} of pid {pid}: {os.strerror(code)}"
    return OSError(code, why)


class Target:
    """One process, pinned by a pidfd for as long as we look at it (no pid reuse mix-ups)."""

    def __init__(self, pid: int, started_before_caller: bool = False) -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"pid must be a positive int, not {pid!r}")
        self.pid = pid
        rc = lib.pso_pidfd_open(pid)
        if rc < 0:
            err = os_error(rc, f"pidfd_open({pid})")
            if -rc == errno.ESRCH:
                raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}")
            if -rc == errno.EINVAL:
                raise OSError(errno.EINVAL, f"pid {pid} is a thread, not a process: pass the "
                              "process id (Tgid in /proc/PID/status)")
            raise _explain(err, pid, "pidfd_open")
        self.pidfd = rc
        try:
            # Who it is, read while the pidfd pins it: checked alive just after, so the name
            # is never that of a process that took the pid later.
            self._command = self._read_command()
            started = _start_ticks(f"/proc/{pid}")
            self.check_running("pidfd_open")
            if started_before_caller and started > _start_ticks("/proc/self"):
                raise ProcessLookupError(
                    errno.ESRCH, f"pid {pid} was reused: the process holding it now "
                                 f"({self._command}) started after this command did, so it is "
                                 "not the one named; nothing of it is reported")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the pidfd (idempotent)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        """Tell whether the process is still running."""
        # A pidfd becomes readable when its process exits.
        p = select.poll()
        p.register(self.pidfd, select.POLLIN)
        return not p.poll(0)

    def _exiting(self, tid: int | None = None) -> bool:
        """Return True when the process (or its thread ``tid``) has begun to exit, or is gone.

        A killed process's descriptors are closed (its /proc/PID/fd empties) before its
        pidfd says it exited: PF_EXITING in /proc/PID/stat's flags is set before that.
        """
        where = f"/proc/{self.pid}" + (f"/task/{tid}" if tid is not None else "")
        try:
            with open(f"{where}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            return True
        try:
            return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & _PF_EXITING)
        except (IndexError, ValueError):
            return True

    def proc_dir(self) -> str | None:
        """Return the /proc directory of its descriptors and namespace; None when exiting.

        Normally /proc/PID. A main thread that called pthread_exit leaves the process
        running with an empty /proc/PID/fd and no /proc/PID/ns: a thread that runs is read
        instead (/proc/PID/task/TID). None when every thread is exiting.
        """
        if not self._exiting():
            return f"/proc/{self.pid}"
        try:
            tids = sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))
        except (OSError, ValueError):
            return None
        for tid in tids:
            if tid != self.pid and not self._exiting(tid):
                return f"/proc/{self.pid}/task/{tid}"
        return None

    def check_running(self, during: str) -> None:
        """Raise ProcessLookupError unless the pinned process runs and is not exiting.

        /proc/PID is read first and the pidfd asked after: a pid freed and reused meanwhile
        fails the second test, so what /proc said was about our process.
        """
        if self.proc_dir() is None or not self.alive():
            raise ProcessLookupError(
                errno.ESRCH, f"pid {self.pid} exited or is exiting ({during}): nothing of it "
                             "is reported, its sockets are being closed by the kernel")

    def socket_fds(self) -> dict[int, list[int]]:
        """Map socket inode -> the process's descriptors for it, from /proc/PID/fd."""
        fd_dir = (self.proc_dir() or f"/proc/{self.pid}") + "/fd"
        try:
            names = os.listdir(fd_dir)
        except PermissionError as err:
            raise PermissionError(err.errno, _explain(err, self.pid, f"reading {fd_dir}")
                                  .strerror) from None
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"pid {self.pid} has exited") from None
        found: dict[int, list[int]] = {}
        for name in names:
            try:
                link = os.readlink(f"{fd_dir}/{name}")
            except OSError:  # closed meanwhile
                continue
            if link.startswith(_SOCKET_LINK) and link.endswith("]"):
                found.setdefault(int(link[len(_SOCKET_LINK):-1]), []).append(int(name))
        # The listing is the process's only if the pidfd still names a live process that
        # had not begun to exit (its descriptors are closed then): a pid freed and reused
        # during the walk would show someone else's descriptors.
        self.check_running(f"listing {fd_dir}")
        for fds in found.values():
            fds.sort()
        return found

    @contextlib.contextmanager
    def borrow(self, fd: int, inode: int) -> Iterator[socket.socket]:
        """Yield our duplicate of the process's ``fd`` (checked to be socket ``inode``).

        The duplicate is closed when the block ends, whatever happens in it.
        """
        rc = lib.pso_pidfd_getfd(self.pidfd, fd, inode)
        if rc < 0:
            raise _explain(os_error(rc, "pidfd_getfd"), self.pid, f"pidfd_getfd of fd {fd}")
        try:
            dup = socket.socket(fileno=rc)
        except BaseException:
            os.close(rc)
            raise
        try:
            yield dup
        finally:
            dup.close()

    def command(self) -> str:
        """Return the process's name, as read when the pidfd pinned it."""
        return self._command

    def _read_command(self) -> str:
        try:
            with open(f"/proc/{self.pid}/comm", encoding="utf-8",
                      errors="surrogateescape") as f:
                return f.read().rstrip("\n")
        except OSError:
            return "?"


def _start_ticks(where: str) -> int:
    """Return when a process started, in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        with open(f"{where}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def same_netns(pid: int, where: str | None = None) -> bool:
    """Tell whether process ``pid`` shares the calling thread's network namespace.

    ``where``: the /proc directory to read it through (a thread's, when the main one exited).
    True also when that cannot be read: our own namespace is then the best guess (and the
    one sock_diag answers for).
    """
    try:
        theirs = os.stat(f"{where or f'/proc/{pid}'}/ns/net").st_ino
        ours = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return True  # cannot tell: our own namespace is the best guess (and sock_diag's)
    return theirs == ours


def _records(pid: int, port: int | None,
             where: str | None = None) -> tuple[list[Connection], str]:
    """Return the socket records of ``pid``'s network namespace, and where they came from.

    ``where``: the /proc directory to read it through (a thread's, when the main one exited).
    """
    where = where or f"/proc/{pid}"
    if same_netns(pid, where):
        return connections(port=port), "sock_diag"
    # Another namespace (a container): dump it from a native thread that enters it, which
    # needs CAP_SYS_ADMIN; without, its /proc/PID/net/tcp* shows the same sockets (no tcp_info).
    try:
        return connections(port=port, netns=pid if where == f"/proc/{pid}"
                           else f"{where}/ns/net"), "sock_diag"
    except NetnsPermissionError:
        pass
    records: list[Connection] = []
    for family, name in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        path = f"{where}/net/{name}"
        try:
            with open(path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        records += parse_proc(text, family, port=port)
    return records, f"/proc/{pid}/net/tcp"


#: ioctl(fd, SIOCGSKNS) (linux/sockios.h, Linux 4.9): a new descriptor of the socket's netns.
_SIOCGSKNS: Final = 0x894C


def namespace_inode(where: str) -> int | None:
    """Return the inode of the network namespace of the process at ``where``, or None."""
    try:
        return os.stat(f"{where}/ns/net").st_ino
    except OSError:
        return None


def foreign_records(target: Target, fds: dict[int, list[int]], skip: int | None,
                    port: int | None, *, unseen: list[Unseen] | None = None,
                    **query: object) -> list[Connection]:
    """Return the records of the process's TCP sockets that live in other network namespaces.

    A process may hold sockets of several namespaces (systemd socket activation into a
    PrivateNetwork= service, a thread that called setns). Each descriptor not matched yet is
    duplicated, and SIOCGSKNS on the duplicate opens its namespace: each namespace found
    (other than ``skip``, the one already listed) is dumped once, from inside it. ``query``
    goes to ``connections`` (states, with_info). Sockets of other kinds are left alone.
    ``unseen``: a namespace that cannot be entered (setns refused: no CAP_SYS_ADMIN) is
    appended there, with how many of the process's sockets it holds, and the others are
    still dumped; without it (None) the refusal raises NetnsPermissionError.
    """
    found: dict[int, int] = {}  # namespace inode -> an open descriptor of it
    members: dict[int, int] = {}  # namespace inode -> the process's TCP sockets in it
    try:
        for inode, held in fds.items():
            try:
                with target.borrow(held[0], inode) as dup:
                    if (dup.family not in (socket.AF_INET, socket.AF_INET6)
                            or dup.type != socket.SOCK_STREAM):
                        continue
                    nsfd = fcntl.ioctl(dup.fileno(), _SIOCGSKNS)
            except OSError:  # closed meanwhile, or not ours to duplicate: nothing to add
                continue
            ino = os.fstat(nsfd).st_ino
            members[ino] = members.get(ino, 0) + 1
            if ino == skip or ino in found:
                os.close(nsfd)
            else:
                found[ino] = nsfd
        records: list[Connection] = []
        for ino, nsfd in found.items():
            # The path names the namespace while we hold it; connections() looks it up in
            # namespaces() for a path that outlives this call (a name, a mount, a pid).
            try:
                listed = connections(port=port, netns=f"/proc/self/fd/{nsfd}",
                                     **query)  # type: ignore[arg-type]
            except NetnsPermissionError as err:
                if unseen is None:
                    raise
                unseen.append(Unseen("keepalive", members[ino],
                                     f"in network namespace inode {ino} "
                                     f"({err.strerror or err})"))
                continue
            records += [c for c in listed if c.inode in fds]
        return records
    finally:
        for nsfd in found.values():
            os.close(nsfd)


# --- audit


@dataclass(frozen=True, slots=True)
class ProcessSocket:
    """One TCP socket of a process: where it goes, and the keepalive it really has.

    ``fd`` is the process's descriptor (the lowest, when it holds several for one socket);
    ``connection`` the kernel's record of the socket (``records`` says from where: sock_diag,
    or the process's /proc/PID/net/tcp in another network namespace). ``keepalive`` is what
    getsockopt returns on our pidfd_getfd duplicate: the effective values, host defaults
    included. Where pidfd_getfd was refused, ``keepalive`` is None, ``error`` says why, and
    ``keepalive_enabled`` is read from the record's timer instead (``source == "timer"``).
    """

    pid: int
    fd: int
    connection: Connection
    keepalive: KeepaliveSettings | None
    error: OSError | None
    records: str

    @property
    def source(self) -> str:
        """``"pidfd_getfd"`` (options read from the socket) or ``"timer"`` (from the record)."""
        return FROM_PIDFD if self.keepalive is not None else FROM_TIMER

    @property
    def state(self) -> TcpState:
        """The socket's TCP state."""
        return self.connection.state

    @property
    def is_listener(self) -> bool:
        """True for a LISTEN socket: its keepalive is what accepted connections inherit."""
        return self.connection.state == TcpState.LISTEN

    @property
    def keepalive_enabled(self) -> bool | None:
        """SO_KEEPALIVE as read; from the record's timer where it could not be read.

        A keepalive timer pending means on. No timer at all on a connection means off (an
        enabled connection always has one armed while idle). A retransmit or zero-window
        timer hides the keepalive timer, and listeners have none: None, unknown.
        """
        if self.keepalive is not None:
            return self.keepalive.enabled
        c = self.connection
        if c.timer == Timer.KEEPALIVE:
            return True
        if c.timer == Timer.NONE and c.state not in (TcpState.LISTEN, TcpState.SYN_SENT):
            return False
        return None

    @property
    def detection_time(self) -> int | None:
        """Seconds until an idle dead peer is noticed; None when never or unknown."""
        return None if self.keepalive is None else self.keepalive.detection_time

    def as_dict(self) -> dict[str, object]:
        """Return the socket for JSON."""
        ka = self.keepalive
        c = self.connection
        return {
            "pid": self.pid,
            "fd": self.fd,
            "state": c.state.label,
            "local": c.local,
            "remote": c.remote,
            "inode": c.inode,
            "netns": None if c.netns is None else c.netns.inode,
            "source": self.source,
            "records": self.records,
            "keepalive": self.keepalive_enabled,
            "idle": None if ka is None else ka.idle,
            "interval": None if ka is None else ka.interval,
            "count": None if ka is None else ka.count,
            "user_timeout_ms": None if ka is None else ka.user_timeout_ms,
            "detection_time": self.detection_time,
            "timer": c.timer.label,
            "timer_expires_ms": c.expires_ms if c.timer else None,
            "error": None if self.error is None else str(self.error),
        }


def _audit(target: Target, port: int | None, mask: int,
           unseen: list[Unseen] | None = None) -> list[ProcessSocket]:
    fds = target.socket_fds()
    where = target.proc_dir() or f"/proc/{target.pid}"
    records, source = _records(target.pid, port, where)
    matched = {c.inode for c in records}
    rest = {inode: held for inode, held in fds.items() if inode not in matched}
    tagged = [(c, source) for c in records]
    if rest:
        tagged += [(c, "sock_diag") for c in foreign_records(
            target, rest, namespace_inode(where), port, unseen=unseen)]
    out: list[ProcessSocket] = []
    for conn, source in tagged:
        held = fds.get(conn.inode) if conn.inode else None
        if not held or not mask & (1 << conn.state):
            continue
        fd = held[0]
        settings: KeepaliveSettings | None = None
        error: OSError | None = None
        try:
            with target.borrow(fd, conn.inode) as dup:
                settings = read_keepalive(dup)
        except OSError as err:
            error = err
        out.append(ProcessSocket(target.pid, fd, conn, settings, error, source))
    out.sort(key=lambda s: s.fd)
    # Rows of a process that died meanwhile are stale (and the reads may have failed as it
    # closed them): say it exited rather than report what it no longer holds.
    target.check_running("during the audit")
    return out


def process_sockets(pid: int, *, port: int | None = None,
                    states: Iterable[TcpState | int | str] | None = None) -> list[ProcessSocket]:
    """Return every TCP socket of process ``pid`` with the keepalive it has, by descriptor.

    ``port`` keeps sockets whose local or remote port is ``port``; ``states`` the sockets in
    those states. Each socket's options are read through a pidfd_getfd duplicate that is
    closed before the next one is made; where that is refused, the entry carries the error
    and what the kernel's record shows (see ProcessSocket). Raises ProcessLookupError when
    there is no such process, PermissionError (explained) when its descriptors cannot be
    listed, which is the case for another user's process unless we are root.
    """
    mask = state_mask(states)
    with Target(pid) as target:
        return _audit(target, port, mask)


@dataclass(frozen=True, slots=True)
class ProcessAudit:
    """``process_sockets`` with a summary: what is unprotected, and how long it would take.

    ``worst_detection`` is the longest any connection takes to notice a dead idle peer, in
    seconds; None when some connection never would (keepalive off) or cannot be known.
    ``unseen``: the process's sockets that could not be looked at (in a network namespace
    that could not be entered), one entry per namespace; ``complete`` is False then.
    """

    pid: int
    command: str
    port: int | None
    sockets: tuple[ProcessSocket, ...]
    unseen: tuple[Unseen, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every TCP socket of the process could be looked at."""
        return not self.unseen

    @property
    def connections(self) -> tuple[ProcessSocket, ...]:
        """The sockets that talk to a peer (everything but listeners)."""
        return tuple(s for s in self.sockets if not s.is_listener)

    @property
    def listeners(self) -> tuple[ProcessSocket, ...]:
        """The listeners: their keepalive is inherited by connections they accept later."""
        return tuple(s for s in self.sockets if s.is_listener)

    @property
    def without_keepalive(self) -> tuple[ProcessSocket, ...]:
        """Connections with keepalive off: a vanished peer is never noticed while idle."""
        return tuple(s for s in self.connections if s.keepalive_enabled is False)

    @property
    def unknown(self) -> tuple[ProcessSocket, ...]:
        """Connections whose keepalive could not be read nor told from the record."""
        return tuple(s for s in self.connections if s.keepalive_enabled is None)

    @property
    def refused(self) -> tuple[ProcessSocket, ...]:
        """Sockets whose options could not be read through pidfd_getfd."""
        return tuple(s for s in self.sockets if s.keepalive is None)

    @property
    def worst_detection(self) -> int | None:
        """Seconds the slowest connection takes to notice a dead idle peer (None: never/unknown)."""
        times = [s.detection_time for s in self.connections]
        if self.unseen or any(t is None for t in times):
            return None
        return max((t for t in times if t is not None), default=0)

    def fix_command(self, detect: int = 30) -> str:
        """Return the one command that gives every matching socket a ``detect``-second budget."""
        port = f" --port {self.port}" if self.port is not None else ""
        return f"pysockopt keepalive --pid {self.pid}{port} --detect {detect} --apply"

    def summary(self) -> str:
        """Return two or three lines a person reads first.

        Made printable line by line: a process may name itself anything.
        """
        p = process(Process(self.pid, self.command))
        n = len(self.connections)
        lines = [f"{p}: {n} connection{'s' if n != 1 else ''}, "
                 f"{len(self.listeners)} listener{'s' if len(self.listeners) != 1 else ''}; "
                 f"{len(self.without_keepalive)} without keepalive"
                 + (f", {len(self.unknown)} unknown" if self.unknown else "")
                 + (f"; {sum(u.sockets for u in self.unseen)} more socket(s) not looked at"
                    if self.unseen else "") + "."]
        worst = self.worst_detection
        if self.without_keepalive:
            lines.append("Worst case: a dead peer on an idle connection is never noticed "
                         "(data in flight: only after the retransmission timeout, ~15 min).")
        elif worst is None:
            lines.append("Worst case: unknown (some sockets could not be looked at)."
                         if self.unseen else
                         "Worst case: unknown (some options could not be read).")
        elif n:
            writes = [s.keepalive.worst_case_detection for s in self.connections
                      if s.keepalive is not None]
            text = f"Worst case: a dead peer is noticed after {duration(worst)} when idle"
            if len(writes) == n and all(w is not None for w in writes):
                text += f", {duration(max(w for w in writes if w is not None))} with writes."
            else:
                text += ("; with data in flight and no TCP_USER_TIMEOUT, only after the "
                         "retransmission timeout (~15 min).")
            lines.append(text)
        if self.without_keepalive or (worst is not None and worst > 300):
            lines.append(f"Fix it live: {self.fix_command()}")
        if self.refused:
            lines.append(f"{len(self.refused)} socket(s) read from the kernel's timer only: "
                         f"{self.refused[0].error}")
        lines += [f"Not looked at: {u}." for u in self.unseen]
        return "\n".join(printable(line) for line in lines)

    def as_dict(self) -> dict[str, object]:
        """Return the audit for JSON."""
        return {
            "pid": self.pid,
            "command": self.command,
            "port": self.port,
            "sockets": [s.as_dict() for s in self.sockets],
            "connections": len(self.connections),
            "listeners": len(self.listeners),
            "without_keepalive": len(self.without_keepalive),
            "unknown": len(self.unknown),
            "worst_detection": self.worst_detection,
            "fix": self.fix_command() if self.without_keepalive else None,
            "complete": self.complete,
            "unseen": [u.as_dict() for u in self.unseen],
        }


def audit_process(pid: int, *, port: int | None = None,
                  started_before_caller: bool = False) -> ProcessAudit:
    """Return the keepalive audit of process ``pid`` (its sockets and a summary).

    Raises ProcessLookupError when the process exits or is exiting before the audit ends.
    ``started_before_caller``: also when the process holding ``pid`` started after the
    calling process did (a command given a pid: a younger process got it by reuse).
    """
    unseen: list[Unseen] = []
    with Target(pid, started_before_caller) as target:
        sockets = _audit(target, port, state_mask(None), unseen)
        return ProcessAudit(pid, target.command(), port, tuple(sockets), tuple(unseen))


# --- apply


@dataclass(frozen=True, slots=True)
class KeepaliveChange:
    """What applying a config to one of a process's sockets did (or, in a dry run, would do).

    ``before`` is the socket as audited; ``report`` what apply_keepalive read back from it
    afterwards (None in a dry run or when it failed, and then ``error`` says why).
    """

    socket: ProcessSocket
    config: KeepaliveConfig
    report: KeepaliveReport | None
    error: OSError | None

    @property
    def applied(self) -> bool:
        """True when the options were set and read back."""
        return self.report is not None

    @property
    def after(self) -> KeepaliveSettings | None:
        """The settings read back after the change (None when not applied)."""
        return None if self.report is None else self.report.effective

    def changes(self) -> list[tuple[str, object, object]]:
        """``(option, before, after)`` for each option that differs (after = requested if dry)."""
        before = self.socket.keepalive
        after = self.after
        c = self.config
        wanted = (True, c.idle, c.interval, c.count, c.user_timeout_ms)
        names = ("SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT",
                 "TCP_USER_TIMEOUT")
        olds: tuple[object, ...] = ((before.enabled, before.idle, before.interval, before.count,
                                     before.user_timeout_ms) if before else (None,) * 5)
        news: tuple[object, ...] = ((after.enabled, after.idle, after.interval, after.count,
                                     after.user_timeout_ms) if after else wanted)
        return [(n, o, w) for n, o, w, want in zip(names, olds, news, wanted, strict=True)
                if want is not None and o != w]

    def describe(self) -> str:
        """One line: which socket, and what changed."""
        s = self.socket
        c = s.connection
        head = f"pid {s.pid} fd {s.fd} {c.state.label} {c.local} -> {c.remote}"
        if self.error is not None:
            return f"{head}: not changed: {self.error}"
        diff = ", ".join(f"{n} {_show(o)}->{_show(w)}" for n, o, w in self.changes())
        verb = "set" if self.applied else "would set"
        text = f"{head}: {verb} {diff}" if diff else f"{head}: already as asked"
        if s.is_listener:
            text += " (a listener: connections it accepts from now on inherit this)"
        return text

    def as_dict(self) -> dict[str, object]:
        """Return the change for JSON."""
        after = self.after
        return {
            **self.socket.as_dict(),
            "applied": self.applied,
            "changes": [{"option": n, "before": o, "after": w} for n, o, w in self.changes()],
            "after": None if after is None else after._asdict(),
            "inherited_by_accepted": self.socket.is_listener,
            "error": None if self.error is None else str(self.error),
        }


def _show(value: object) -> str:
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


#: States where keepalive changes nothing: nothing left to probe, or nothing the process holds.
_POINTLESS: Final = frozenset({TcpState.TIME_WAIT, TcpState.CLOSE, TcpState.SYN_RECV,
                               TcpState.NEW_SYN_RECV})


def apply_keepalive_to_process(
    pid: int,
    config: KeepaliveConfig,
    *,
    port: int | None = None,
    states: Iterable[TcpState | int | str] | TcpState | int | str | None = None,
    dry_run: bool = False,
    started_before_caller: bool = False,
) -> list[KeepaliveChange]:
    """Apply ``config`` to the live TCP sockets of process ``pid``; one result per socket.

    Each matching socket (``port``: local or remote port; ``states``: None for every state
    where keepalive acts) is duplicated with pidfd_getfd, configured with apply_keepalive on
    the duplicate and read back, and the duplicate is closed before the next. ``dry_run``
    reads and reports without changing anything. Listeners included this way make the
    connections they accept from now on inherit the settings (Linux). One socket refused
    never stops the others: its result carries the error. Each change is logged, one line per
    socket, on the ``pysockopt.live`` logger. A process that exits meanwhile raises
    ProcessLookupError; ``started_before_caller`` as in ``audit_process``.
    """
    if not isinstance(config, KeepaliveConfig):
        raise TypeError(f"config must be a KeepaliveConfig, not {type(config).__name__}")
    if states is not None:
        wanted = ({parse_state(states)} if isinstance(states, (int, str))
                  else {parse_state(s) for s in states})
        mask = state_mask(wanted)
    else:
        mask = state_mask(s for s in TcpState if s not in _POINTLESS)
    results: list[KeepaliveChange] = []
    with Target(pid, started_before_caller) as target:
        for sock in _audit(target, port, mask):
            if dry_run:
                results.append(KeepaliveChange(sock, config, None, sock.error))
                continue
            try:
                with target.borrow(sock.fd, sock.connection.inode) as dup:
                    report = apply_keepalive(dup, config, verify=True)
                change = KeepaliveChange(sock, config, report, None)
            except OSError as err:
                change = KeepaliveChange(sock, config, None, err)
            log.info("%s", change.describe())
            results.append(change)
        if not dry_run and results:
            target.check_running(f"during the apply, after {len(results)} socket(s) were tried")
    return results
