"""Entering a network namespace and reading in it: a name, path or pid -> an open descriptor.

``opened()`` turns any way of naming a namespace (a NetNamespace, an ``ip netns`` name, a path,
a pid) into an open descriptor, closed on every path; ``resolve`` / ``describe`` say which
NetNamespace it is. The C core enters it in a short-lived native thread of its own
(csrc/netns.h), so no Python thread ever changes namespace: ``read_files`` reads files there in
one trip, ``FileReads`` hands a batch of files to a bigger job (a look's, connections.trip),
``entry_error`` words what entering refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from .._core import ffi, lib
from .._platform import CLONE_NEWNET as _CLONE_NEWNET
from .._sock import os_error
from ..errors import (
    InvalidConfigError,
    NetnsGoneError,
    NetnsPermissionError,
    NotANetnsError,
)
from .census import RUN_NETNS, NetNamespace, namespaces, own_stat

__all__ = [
    "Entered",
    "FileReads",
    "NetnsArg",
    "describe",
    "entry_error",
    "opened",
    "read_files",
    "resolve",
]

#: ioctl(fd, NS_GET_NSTYPE) = _IO(0xb7, 0x3) (linux/nsfs.h, kernel 4.11): the namespace type.
_NS_GET_NSTYPE: Final = 0xB703


# --- naming a namespace -> an open descriptor

#: What ``netns=`` accepts: a NetNamespace, an ``ip netns`` name, a path, a pid, or None.
NetnsArg = NetNamespace | str | os.PathLike[str] | int | None


def _candidates(netns: NetNamespace | str | os.PathLike[str] | int) -> tuple[list[str], str]:
    """Return the paths that may open ``netns``, and how to name it in a message."""
    if isinstance(netns, NetNamespace):
        paths = [netns.path] + [f"/proc/{pid}/ns/net" for pid in netns.pids]
        return list(dict.fromkeys(paths)), f"network namespace {netns.label}"
    if isinstance(netns, bool):
        raise TypeError("netns must be a NetNamespace, an ip netns name, a path or a pid, "
                        "not bool")
    if isinstance(netns, int):
        if netns <= 0:
            raise InvalidConfigError("netns", netns, "a pid > 0")
        return [f"/proc/{netns}/ns/net"], f"the network namespace of pid {netns}"
    if isinstance(netns, (str, os.PathLike)):
        text = os.fspath(netns)
        if not isinstance(text, str) or not text or "\0" in text:
            raise InvalidConfigError("netns", netns, "an ip netns name, a path or a pid")
        if "/" in text:
            return [text], f"network namespace {text}"
        if text in (".", ".."):
            raise InvalidConfigError("netns", netns, "an ip netns name (see ip netns list)")
        return [f"{RUN_NETNS}/{text}"], f"network namespace '{text}'"
    raise TypeError("netns must be a NetNamespace, an ip netns name, a path or a pid, not "
                    f"{type(netns).__name__}")


#: ioctl(NS_GET_NSTYPE) answers: the CLONE_NEW* flag of each namespace type.
_NS_TYPES: Final = {0x00020000: "mnt", 0x02000000: "cgroup", 0x04000000: "uts",
                    0x08000000: "ipc", 0x10000000: "user", 0x20000000: "pid", 0x00000080: "time",
                    _CLONE_NEWNET: "net"}
_FILE_KINDS: Final = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                      (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                      (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"))
#: The open flags: never a controlling terminal, never a wait (the path was checked to be an
#: nsfs file first; these hold should it have been swapped for something else meanwhile).
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def _file_kind(mode: int) -> str:
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a namespace file")


def _not_netns(fd: int, nsfs: int) -> str | None:
    """None when the open ``fd`` is a network namespace, else what it is (for a message)."""
    st = os.fstat(fd)
    if st.st_dev != nsfs:  # swapped between the stat and the open
        return _file_kind(st.st_mode)
    try:
        nstype = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:  # a kernel without NS_GET_NSTYPE (before 4.11): setns would tell
        return "an nsfs file of unknown type"
    if nstype == _CLONE_NEWNET:
        return None
    return f"a {_NS_TYPES.get(nstype, 'non-network')} namespace"


#: /proc paths whose open passes the ptrace access check on that process.
_PROC_NS: Final = re.compile(r"/proc/(?:\d+|self|thread-self)(?:/task/\d+)?/ns/net")


def _errno_text(code: int) -> str:
    """``Permission denied (EACCES)``: the message and the errno's name."""
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


def _refused(err: OSError, what: str) -> NetnsPermissionError:
    """Return the error for a path of ``what`` we may not stat or open, naming the check."""
    code = err.errno or errno.EACCES
    path = os.fsdecode(err.filename) if err.filename is not None else "?"
    head = f"{_errno_text(code)}: opening {path} for {what}"
    if not _PROC_NS.fullmatch(path):
        return NetnsPermissionError(
            code, f"{head} was refused (the file's permissions, or a security module)", "open")
    if os.geteuid() != 0:
        return NetnsPermissionError(
            code, f"{head} needs root or CAP_SYS_PTRACE (it belongs to another user's "
                  "process)", "ptrace")
    return NetnsPermissionError(
        code, f"{head} was refused even as root: the kernel's ptrace access check on that "
              "process failed (a security module, or a process of another user namespace)",
        "ptrace")


def _not_ready(path: str, mode: int, what: str) -> None:
    """Raise FileNotFoundError for an ``ip netns`` name that is a plain file, not a mount.

    ``ip netns add`` creates the file and then mounts the namespace on it; ``ip netns del``
    unmounts it and then removes it: meanwhile the name is a plain empty file. That is a
    namespace not there (yet, or any more), not a wrong value.
    """
    if stat.S_ISREG(mode) and os.path.dirname(path) == RUN_NETNS:
        raise FileNotFoundError(
            errno.ENOENT, f"{what} is not ready or has vanished: {path} is a plain file with "
                          "no namespace mounted on it (ip netns add or del in progress, or "
                          "left behind)")


def _open(netns: NetNamespace | str | os.PathLike[str] | int) -> tuple[int, str]:
    """Open ``netns``; return (descriptor, its name for messages). The caller closes it.

    Each path is stat'ed first and opened only when it is an nsfs file (the filesystem of
    /proc/thread-self/ns/net): a FIFO, a terminal or another device is refused unopened.
    """
    paths, what = _candidates(netns)
    expected = netns.inode if isinstance(netns, NetNamespace) else None
    nsfs = own_stat().st_dev
    refused: OSError | None = None
    for path in paths:
        try:
            st = os.stat(path)
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        except PermissionError as err:
            refused = err
            continue
        if st.st_dev != nsfs:
            if expected is None:
                _not_ready(path, st.st_mode, what)
                raise NotANetnsError(path, _file_kind(st.st_mode))
            continue  # the name now holds something else: that namespace is gone
        if expected is not None and st.st_ino != expected:
            continue  # the pid was reused, or the name now mounts another namespace
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        except PermissionError as err:
            refused = err
            continue
        try:
            kind = _not_netns(fd, nsfs)
            if kind is None and expected is not None and os.fstat(fd).st_ino != expected:
                kind = "another namespace"  # replaced between the stat and the open
        except BaseException:
            os.close(fd)
            raise
        if kind is None:
            return fd, what
        os.close(fd)
        if expected is None:
            raise NotANetnsError(path, kind)
    if refused is not None:
        raise _refused(refused, what)
    if isinstance(netns, NetNamespace):
        raise NetnsGoneError(errno.ENOENT, f"{what} is gone (no process or mount holds it "
                                           "any more)")
    if isinstance(netns, int):
        raise ProcessLookupError(errno.ESRCH, f"no process {netns}: {what} cannot be found")
    if "/" in os.fspath(netns):
        raise FileNotFoundError(errno.ENOENT, f"{what}: no such file")
    raise FileNotFoundError(errno.ENOENT, f"no network namespace named '{os.fspath(netns)}' "
                                          f"in {RUN_NETNS} (ip netns list shows the names)")


@dataclass(frozen=True, slots=True)
class Entered:
    """An open descriptor of a namespace other than the caller's (see ``opened``)."""

    fd: int
    what: str


@contextlib.contextmanager
def opened(netns: NetnsArg) -> Iterator[Entered | None]:
    """Open the namespace ``netns`` names; yield None when it is the caller's own.

    The descriptor is closed on every path. Bad input raises InvalidConfigError or TypeError;
    a name, path or pid that does not exist FileNotFoundError / ProcessLookupError; a
    NetNamespace that has vanished NetnsGoneError; a path we may not open NetnsPermissionError.
    """
    if netns is None or (isinstance(netns, NetNamespace) and netns.inode == own_stat().st_ino):
        yield None
        return
    fd, what = _open(netns)
    try:
        st = os.fstat(fd)
        own = own_stat()
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            os.close(fd)
            fd = -1
            yield None
        else:
            yield Entered(fd, what)
    finally:
        if fd >= 0:
            os.close(fd)


def resolve(netns: NetnsArg) -> NetNamespace | None:
    """Return the NetNamespace ``netns`` names (None for the caller's own), fully described.

    A NetNamespace comes back as it is (after checking it still exists); a name, path or pid is
    looked up in ``namespaces()`` for its pids and container.
    """
    with opened(netns) as target:
        if target is None:
            return None
        if isinstance(netns, NetNamespace):
            return netns
        inode = os.fstat(target.fd).st_ino
    assert netns is not None  # None is the caller's own: target None above
    return describe(netns, inode)


def describe(netns: NetNamespace | str | os.PathLike[str] | int, inode: int) -> NetNamespace:
    """Return the NetNamespace ``netns`` names, already opened by the caller: ``inode`` is its.

    As ``resolve``, without opening it again: a NetNamespace comes back as it is; a name, path
    or pid is looked up in ``namespaces()`` (the census: it stats, it opens no namespace).
    """
    if isinstance(netns, NetNamespace):
        return netns
    for ns in namespaces():
        if ns.inode == inode:
            return ns
    # Held only by a descriptor or a mount we cannot see: what we know.
    path = os.fspath(netns) if isinstance(netns, (str, os.PathLike)) else ""
    if path and "/" not in path:
        return NetNamespace(inode, f"{RUN_NETNS}/{path}", path)
    if isinstance(netns, int):
        return NetNamespace(inode, f"/proc/{netns}/ns/net", None, (netns,))
    return NetNamespace(inode, path)


def entry_error(rc: int, step: int, target: Entered) -> OSError:
    """Return the OSError for a native call that failed entering ``target`` or in it."""
    code = -rc
    if step == lib.PSO_NETNS_STEP_SETNS and code == errno.EPERM:
        if os.geteuid() != 0:
            why = "needs CAP_SYS_ADMIN (run as root)"
        else:
            why = ("needs CAP_SYS_ADMIN over the user namespace that owns it, which this "
                   "process lacks even as root (root of a container or of a user namespace)")
        return NetnsPermissionError(code, f"{_errno_text(code)}: entering {target.what} {why}",
                                    "setns")
    if step == lib.PSO_NETNS_STEP_SETNS and code == errno.EINVAL:
        return OSError(code, f"{os.strerror(code)}: {target.what} is not a network namespace")
    if step == lib.PSO_NETNS_STEP_SETNS:
        return os_error(rc, f"entering {target.what}")
    if step == lib.PSO_NETNS_STEP_THREAD:
        return os_error(rc, f"starting the thread that enters {target.what}")
    return os_error(rc, f"in {target.what}")


#: First buffer per file; one that fills it is read again with four times the room.
_FIRST_CAP: Final = 1 << 16
_MAX_CAP: Final = 1 << 30


class FileReads:
    """The files one native trip reads: the ``struct pso_netns_file`` array and its buffers.

    Hand ``files`` and ``len(paths)`` to a native job (``pso_netns_read_files``, or a look's
    ``pso_netns_look``), then ``results(target)`` decodes what it read; a file that filled its
    buffer is read again, grown, in a trip of its own (``read_files``).
    """

    __slots__ = ("_bufs", "_cap", "_encoded", "files", "paths")

    def __init__(self, paths: Sequence[str], cap: int = _FIRST_CAP) -> None:
        self.paths = list(paths)
        self._cap = cap
        self._encoded = [ffi.new("char[]", os.fsencode(p)) for p in self.paths]
        self._bufs = [ffi.new("uint8_t[]", cap) for _ in self.paths]
        self.files = ffi.new("struct pso_netns_file[]", max(1, len(self.paths)))
        for k in range(len(self.paths)):
            self.files[k].path = self._encoded[k]
            self.files[k].buf = self._bufs[k]
            self.files[k].cap = cap

    def _take(self, target: Entered) -> tuple[list[bytes | OSError | None], list[int]]:
        """Each file's bytes or OSError (None: filled its buffer), and those to read again."""
        out: list[bytes | OSError | None] = []
        again: list[int] = []
        for k, path in enumerate(self.paths):
            f = self.files[k]
            if f.rc == -errno.ENOBUFS and self._cap < _MAX_CAP:
                again.append(k)
                out.append(None)
            elif f.rc:
                code = -f.rc
                out.append(OSError(code, f"{os.strerror(code)} (reading {path} in "
                                         f"{target.what})", path))
            else:
                out.append(ffi.buffer(self._bufs[k], f.len)[:])
        return out, again

    def results(self, target: Entered) -> list[bytes | OSError]:
        """Return each file's bytes or the OSError reading it raised, after the job ran."""
        out, again = self._take(target)
        if again:
            grown = _read_in(target, [self.paths[k] for k in again], self._cap * 4)
            for k, got in zip(again, grown, strict=True):
                out[k] = got
        return [r if r is not None else OSError(errno.EIO, "unread") for r in out]


def _read_in(target: Entered, paths: Sequence[str], cap: int) -> list[bytes | OSError]:
    reads = FileReads(paths, cap)
    step = ffi.new("int *")
    rc = lib.pso_netns_read_files(target.fd, reads.files, len(paths), step)
    if rc:
        raise entry_error(rc, step[0], target)
    return reads.results(target)


def read_files(target: Entered | None, paths: Sequence[str]) -> list[bytes | OSError]:
    """Read each of ``paths`` as the namespace ``target`` sees it (None: the caller's own).

    For another namespace all of them are read in one native thread that entered it (paths
    under /proc/thread-self/net/ and /proc/sys/net/ then show that namespace). Each entry is the
    file's bytes or the OSError reading it raised; failing to enter raises (see entry_error).
    """
    if target is None:
        out: list[bytes | OSError] = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
            except OSError as err:
                out.append(err)
        return out
    return _read_in(target, paths, _FIRST_CAP)
