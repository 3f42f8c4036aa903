"""Who holds a socket: the processes behind socket inodes, found through /proc/*/fd.

The one module that walks /proc for owners (``walk_owners``, ``processes_of``) and looks up
user names: the diagnosis rules stay free of I/O and ask an ``OwnerBook``, which remembers each
inode it resolved and what could not be seen (``Unseen``).
"""

from __future__ import annotations

import errno
import os
import pwd
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NamedTuple

from .._format import count

if TYPE_CHECKING:
    from .connections import Connection

__all__ = [
    "OwnerBook", "Owners", "Process", "Unseen", "hidden_reason", "processes_of",
    "user_label", "walk_owners",
]


class Process(NamedTuple):
    """A process holding a socket: its pid and command name (/proc/PID/comm)."""

    pid: int
    command: str

# --- one walk of /proc/*/fd


#: Why a process's descriptors may be unreadable without that being our failure: it exited
#: during the walk (ENOENT, ESRCH) or is not ours to inspect (EACCES, EPERM: another user's,
#: when not root). Anything else (EMFILE, ENFILE, ENOMEM) would silently lose owners: raised.
_SKIPPED: Final = frozenset({errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM})
_NOT_OURS: Final = frozenset({errno.EACCES, errno.EPERM})


class Owners(NamedTuple):
    """One walk of /proc/*/fd (``walk_owners``): the processes per socket inode, and more.

    ``found``: inode -> the processes holding it; ``hidden``: how many processes could not be
    inspected (not ours: EACCES, EPERM).
    """

    found: dict[int, tuple[Process, ...]]
    hidden: int


def walk_owners(inodes: Iterable[int]) -> Owners:
    """Find the processes holding each socket inode, and count the processes we may not see.

    ``processes_of`` with what it leaves out: ``hidden`` > 0 means an inode nobody was found
    for may still be held by a process we could not inspect (another user's, when not root);
    the diagnosis rules say "owner not visible" instead of "nobody". Processes that exit
    during the walk are skipped; any other failure (EMFILE, ENFILE, ENOMEM) raises OSError.
    """
    wanted = {f"socket:[{i}]": i for i in inodes if i}
    found: dict[int, list[Process]] = {i: [] for i in wanted.values()}
    hidden = 0
    if not wanted:
        return Owners({}, 0)
    # listdir, not scandir: the walk then holds no descriptor of its own while it reads each
    # process, so it works with a single free descriptor (scandir kept one open, and every
    # listdir below failed with EMFILE, which used to be skipped as "not ours").
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError as err:
            if err.errno not in _SKIPPED:
                raise _owner_error(err, fd_dir) from err
            hidden += err.errno in _NOT_OURS
            continue
        hits = []
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError as err:
                if err.errno not in _SKIPPED:
                    raise _owner_error(err, f"{fd_dir}/{fd}") from err
                continue
            inode = wanted.get(target)
            if inode is not None:
                hits.append(inode)
        if hits:
            command = _command(int(name))
            for inode in dict.fromkeys(hits):
                found[inode].append(Process(int(name), command))
    return Owners({inode: tuple(procs) for inode, procs in found.items()}, hidden)


def _command(pid: int) -> str:
    path = f"/proc/{pid}/comm"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except OSError as err:
        if err.errno not in _SKIPPED:
            raise _owner_error(err, path) from err
        return "?"


def _owner_error(err: OSError, path: str) -> OSError:
    return OSError(err.errno, f"{err.strerror} (reading {path} to find socket owners)")


def processes_of(inodes: Iterable[int]) -> dict[int, tuple[Process, ...]]:
    """Map socket inodes to the processes holding them, in one walk of /proc/*/fd.

    This is what makes ``ss -p`` slow, so it is done only for the few sockets a diagnosis
    names. Processes that exit during the walk, and those we may not inspect (other users',
    when not root), are skipped; an inode nobody visible holds maps to an empty tuple.
    Raises OSError for any other failure (EMFILE, ENFILE, ENOMEM), rather than return
    owners that are silently missing.
    """
    return walk_owners(inodes).found


# --- what a diagnosis could not see, and the book of its lookups


class Unseen(NamedTuple):
    """What a diagnosis could not look at: ``Unseen("owners", 15, "not visible without root")``.

    ``str()`` says it as a report does: "owners of 15 sockets not visible without root".
    """

    what: str
    sockets: int
    reason: str

    def __str__(self) -> str:
        return f"{self.what} of {count(self.sockets, 'socket')} {self.reason}"

    def as_dict(self) -> dict[str, object]:
        """Return it for JSON."""
        return {"what": self.what, "sockets": self.sockets, "reason": self.reason}


class OwnerBook:
    """The owner lookups of one diagnosis: each socket looked up once, and what was not seen.

    A socket whose owner could not be known is remembered with the reason: other users'
    processes are not ours to inspect when not root (the kernel still tells everyone each
    socket's uid), or the walk of /proc failed (EMFILE...).
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[Process, ...]] = {}
        self._unknown: dict[int, str] = {}

    def lookup(self, conns: Iterable[Connection]) -> dict[int, tuple[Process, ...] | None]:
        """Map each socket's inode to its processes: () for nobody, None for "not known"."""
        inodes = [c.inode for c in conns if c.inode]
        todo = [i for i in dict.fromkeys(inodes) if i not in self._known
                and i not in self._unknown]
        if todo:
            try:
                walk = walk_owners(todo)
            except OSError as err:
                reason = f"unknown ({err.strerror} while reading /proc)"
                self._unknown.update(dict.fromkeys(todo, reason))
            else:
                hidden = hidden_reason() if walk.hidden else None
                for inode, procs in walk.found.items():
                    if procs or hidden is None:
                        self._known[inode] = procs
                    else:  # held by nobody we can see, and some processes hid from us
                        self._unknown[inode] = hidden
        return {i: self._known.get(i) for i in inodes}

    def unseen(self) -> tuple[Unseen, ...]:
        """Return what could not be seen, one entry per reason."""
        reasons = Counter(self._unknown.values())
        return tuple(Unseen("owners", n, reason) for reason, n in sorted(reasons.items()))


def hidden_reason() -> str:
    """Why an owner nobody was found for may still exist: what this process may not see."""
    if os.geteuid() != 0:
        return "not visible without root"
    return "not visible to this process (/proc/PID/fd unreadable)"


def user_label(uid: int) -> str:
    """``uid 0 (root)``, or ``uid 1234`` for a uid with no name here."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, OSError):
        return f"uid {uid}"
