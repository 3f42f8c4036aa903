"""Every network namespace on the host (the census), and one call per namespace.

Discovery: the namespace of every process (/proc/PID/ns/net, one ``stat`` each: the inode is
the namespace's identity), the names ``ip netns add`` mounts under /run/netns, and every other
nsfs bind mount in /proc/thread-self/mountinfo (Docker keeps its own under /run/docker/netns);
each namespace carries the container its processes' cgroups name (containers.py). The census
only stats: it opens no namespace. ``for_each_netns`` calls a function once per namespace and
says what it could not look into.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from ..errors import NetnsGoneError, NetnsPermissionError
from .containers import Container, container_of_pid

__all__ = [
    "OWN",
    "RUN_NETNS",
    "NamespaceList",
    "NetNamespace",
    "NetnsResults",
    "NetnsSkipped",
    "current_inode",
    "current_namespace",
    "for_each_netns",
    "namespaces",
    "own_stat",
    "refusal_notes",
]

T = TypeVar("T")

#: The calling thread's own namespace (thread-self: setns changes threads, not processes).
OWN: Final = "/proc/thread-self/ns/net"
#: Where ``ip netns add`` mounts the namespaces it names.
RUN_NETNS: Final = "/run/netns"


# --- namespaces


@dataclass(frozen=True, slots=True)
class NetNamespace:
    """One network namespace: its inode (its identity), a path that opens it, what names it.

    ``path``: /run/netns/NAME for an ``ip netns`` name, else another bind mount of it, else
    /proc/PID/ns/net of its lowest pid. ``name``: the ``ip netns`` name or None. ``pids``: the
    processes in it that could be seen (possibly none: a namespace only a mount holds).
    ``container``: what their cgroups say (None for the host's initial namespace).
    """

    inode: int
    path: str
    name: str | None = None
    pids: tuple[int, ...] = ()
    container: Container | None = None

    @property
    def label(self) -> str:
        """The ``ip netns`` name, else ``inode N``: how reports name this namespace."""
        return self.name if self.name is not None else f"inode {self.inode}"

    def as_dict(self) -> dict[str, object]:
        """Return the namespace for JSON."""
        return {"inode": self.inode, "path": self.path, "name": self.name,
                "pids": list(self.pids),
                "container": None if self.container is None else self.container.as_dict()}


class NamespaceList(list[NetNamespace]):
    """What ``namespaces()`` returns: a list of NetNamespace that also says what it missed.

    ``unseen``: processes whose namespace could not be read (another user's /proc/PID/ns/net
    needs root or CAP_SYS_PTRACE): their namespaces may be missing from the list.
    """

    unseen: int

    def __init__(self, items: Iterable[NetNamespace] = (), unseen: int = 0) -> None:
        super().__init__(items)
        self.unseen = unseen

    @property
    def complete(self) -> bool:
        """True when every process's namespace could be read."""
        return self.unseen == 0

    @property
    def notes(self) -> tuple[str, ...]:
        """What the list may be missing, in words (empty when complete)."""
        if not self.unseen:
            return ()
        return (_unseen_note(self.unseen),)


def _unseen_note(unseen: int) -> str:
    if os.geteuid() != 0:
        return (f"the namespace of {unseen} process(es) could not be read (another user's "
                "/proc/PID/ns/net needs root or CAP_SYS_PTRACE): only this user's processes' "
                "namespaces and the mounted ones (/run/netns) are listed")
    return (f"the namespace of {unseen} process(es) could not be read even as root (ptrace "
            "access refused: a security module, or a process of another user namespace): "
            "namespaces only they use are not listed")


def own_stat() -> os.stat_result:
    """Return the stat of the calling thread's network namespace (inode: its identity)."""
    return os.stat(OWN)


def current_inode() -> int:
    """Return the inode of the calling thread's network namespace (its identity)."""
    return own_stat().st_ino


def current_namespace() -> NetNamespace:
    """Return the calling thread's own network namespace, described as ``namespaces()`` does."""
    inode = current_inode()
    for ns in namespaces():
        if ns.inode == inode:
            return ns
    return NetNamespace(inode, f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net")


def _mount_points() -> dict[int, str]:
    """Inode -> mount point of every nsfs bind mount of a network namespace we can see.

    The path is the mount point's bytes (kept as os.fsdecode keeps them), so it opens.
    """
    found: dict[int, str] = {}
    try:
        with open("/proc/thread-self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split(b" ")  # one space between fields; other whitespace is in names
        try:
            fstype = fields[fields.index(b"-") + 1]
        except (ValueError, IndexError):
            continue
        root = fields[3] if len(fields) > 4 else b""
        if fstype == b"nsfs" and root.startswith(b"net:[") and root.endswith(b"]"):
            # mountinfo writes space, tab, newline and backslash as octal escapes; any
            # other byte (0xfe included) is as it is.
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]),
                           fields[4])
            with contextlib.suppress(ValueError):
                found.setdefault(int(root[5:-1]), os.fsdecode(point))
    return found


def _named_mounts(nsfs: int) -> dict[int, str]:
    """Inode -> ``ip netns`` name, for the /run/netns entries that are mounted namespaces."""
    found: dict[int, str] = {}
    try:
        entries = sorted(os.listdir(RUN_NETNS))
    except OSError:
        return found
    for name in entries:
        try:
            st = os.stat(f"{RUN_NETNS}/{name}")
        except OSError:
            continue
        if st.st_dev == nsfs:  # else a stale file: `ip netns add` left it, nothing mounted
            found.setdefault(st.st_ino, name)
    return found


def _pids_by_namespace() -> tuple[dict[int, list[int]], int]:
    found: dict[int, list[int]] = {}
    unseen = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}/ns/net")
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited during the walk
        except PermissionError:
            unseen += 1
            continue
        found.setdefault(st.st_ino, []).append(int(name))
    return found, unseen


def namespaces() -> NamespaceList:
    """Return every network namespace on the host, the caller's own first.

    Found through /proc/*/ns/net (deduplicated by inode), /run/netns (``ip netns`` names) and
    the nsfs bind mounts in mountinfo. Each carries the container its processes' cgroups name.
    As non-root, other users' processes cannot be looked at: the result then lists this user's
    processes' namespaces and the mounted ones, and says so (``unseen``, ``notes``).
    """
    own = own_stat()
    pids, unseen = _pids_by_namespace()
    names = _named_mounts(own.st_dev)
    mounts = _mount_points()
    try:
        initial: int | None = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        # Not ours to read (we are not root): then do not attribute our own namespace, which
        # on a host is the initial one, full of every service's processes.
        initial = own.st_ino
    inodes = set(pids) | set(names) | set(mounts) | {own.st_ino}
    result = []
    for inode in inodes:
        members = tuple(sorted(pids.get(inode, ())))
        name = names.get(inode)
        if name is not None:
            path = f"{RUN_NETNS}/{name}"
        elif inode in mounts:
            path = mounts[inode]
        elif members:
            path = f"/proc/{members[0]}/ns/net"
        else:
            path = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"
        container = None
        if inode != initial:
            for pid in members:
                container = container_of_pid(pid)
                if container is not None:
                    break
        result.append(NetNamespace(inode, path, name, members, container))
    result.sort(key=lambda ns: (ns.inode != own.st_ino, ns.name is None, ns.name or "",
                                ns.inode))
    return NamespaceList(result, unseen)


# --- one call per namespace


@dataclass(frozen=True, slots=True)
class NetnsSkipped:
    """A namespace ``for_each_netns`` could not look into, and why.

    ``reason``: "vanished" (it disappeared during the census: nothing left to see) or
    "permission" (refused); ``check``, for a refusal, the NetnsPermissionError's: "setns"
    (entering needs CAP_SYS_ADMIN), "ptrace" (opening /proc/PID/ns/net) or "open";
    ``message`` says it in words.
    """

    netns: NetNamespace
    reason: str
    message: str
    check: str | None = None

    def as_dict(self) -> dict[str, object]:
        """Return the skip for JSON."""
        return {"netns": self.netns.as_dict(), "reason": self.reason, "check": self.check,
                "message": self.message}


def refusal_notes(checks: Iterable[str | None]) -> list[str]:
    """Say how many namespaces could not be entered, and why: one note, the count first.

    ``checks``: the ``check`` of each refused namespace (NetnsSkipped, NetnsPermissionError).
    The note starts with the one count every output repeats ("5 network namespace(s) could
    not be entered"), then each refusal with its own count when there are several kinds.
    Empty when nothing was refused.
    """
    tally: dict[str | None, int] = {}
    for check in checks:
        tally[check] = tally.get(check, 0) + 1
    if not tally:
        return []
    root = os.geteuid() == 0
    whys = []
    for check, n in tally.items():
        if check == "ptrace":
            why = ("opening their /proc/PID/ns/net was refused even as root by the ptrace "
                   "access check (a security module, or processes of another user namespace)"
                   if root else
                   "another user's /proc/PID/ns/net needs root or CAP_SYS_PTRACE")
        elif check == "open":
            why = "their file's permissions refused opening it"
        else:
            why = ("setns needs CAP_SYS_ADMIN over their user namespace, which this process "
                   "lacks even as root" if root else "that needs CAP_SYS_ADMIN (run as root)")
        whys.append(why if len(tally) == 1 else f"{n}: {why}")
    total = sum(tally.values())
    return [f"{total} network namespace(s) could not be entered: {'; '.join(whys)}"]


@dataclass(frozen=True, slots=True)
class NetnsResults(Generic[T]):
    """One result per namespace that could be looked into, and what could not be seen.

    ``results``: (namespace, result) pairs in ``namespaces()`` order; ``skipped``: namespaces
    left out (vanished, or not enterable); ``unseen``: processes whose namespace could not even
    be read (as non-root), so namespaces may be missing altogether.
    """

    results: tuple[tuple[NetNamespace, T], ...]
    skipped: tuple[NetnsSkipped, ...] = ()
    unseen: int = 0

    @property
    def refused(self) -> tuple[NetnsSkipped, ...]:
        """The namespaces skipped for lack of permission."""
        return tuple(s for s in self.skipped if s.reason == "permission")

    @property
    def complete(self) -> bool:
        """True when every namespace that exists was looked into."""
        return not self.refused and not self.unseen

    @property
    def notes(self) -> tuple[str, ...]:
        """What was not seen, in words: never read "no problems" into what is missing."""
        notes = refusal_notes(s.check for s in self.refused)
        if self.unseen:
            notes.append(_unseen_note(self.unseen))
        for s in self.skipped:
            if s.reason == "vanished":
                notes.append(f"network namespace {s.netns.label} vanished during the census "
                             "(its last process exited): skipped")
        return tuple(notes)


def for_each_netns(
    fn: Callable[[NetNamespace], T], netns: Iterable[NetNamespace] | None = None
) -> NetnsResults[T]:
    """Call ``fn(ns)`` for every namespace (``namespaces()`` unless ``netns`` is given).

    ``for_each_netns(lambda ns: diagnose(netns=ns))`` diagnoses the whole host. A namespace that
    vanishes meanwhile, or that may not be entered (not root), is skipped and listed in
    ``skipped``; any other error propagates. A ``namespaces()`` result passed as ``netns``
    keeps its ``unseen`` count in the result.
    """
    given = namespaces() if netns is None else netns
    # A NamespaceList passed in keeps saying what it missed (its ``unseen``).
    unseen = given.unseen if isinstance(given, NamespaceList) else 0
    found = list(given)
    results: list[tuple[NetNamespace, T]] = []
    skipped: list[NetnsSkipped] = []
    for ns in found:
        try:
            results.append((ns, fn(ns)))
        except NetnsGoneError as err:
            skipped.append(NetnsSkipped(ns, "vanished", str(err)))
        except NetnsPermissionError as err:
            skipped.append(NetnsSkipped(ns, "permission", str(err), err.check))
    return NetnsResults(tuple(results), tuple(skipped), unseen)
