"""Every network namespace on the host, and the container each one belongs to.

Discovery: the namespace of every process (/proc/PID/ns/net, one ``stat`` each: the inode is
the namespace's identity), the names ``ip netns add`` mounts under /run/netns, and every other
nsfs bind mount in /proc/thread-self/mountinfo (Docker keeps its own under /run/docker/netns).
Attribution: the cgroup path of a namespace's processes, matched against ``CGROUP_PATTERNS``
(a table of data, one row per path format of each runtime).

Entering: ``opened()`` turns any way of naming a namespace (a NetNamespace, an ``ip netns``
name, a path, a pid) into an open descriptor, closed on every path. The C core enters it in a
short-lived native thread of its own (csrc/netns.h), so no Python thread ever changes namespace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, TypeVar

from .._core import ffi, lib
from .._platform import CLONE_NEWNET as _CLONE_NEWNET
from .._sock import os_error
from ..errors import (
    InvalidConfigError,
    NetnsGoneError,
    NetnsPermissionError,
    NotANetnsError,
)

__all__ = [
    "CGROUP_PATTERNS",
    "CgroupPattern",
    "Container",
    "Entered",
    "FileReads",
    "NamespaceList",
    "NetNamespace",
    "NetnsArg",
    "NetnsGoneError",
    "NetnsPermissionError",
    "NetnsResults",
    "NetnsSkipped",
    "NotANetnsError",
    "container_from_cgroup",
    "container_of_pid",
    "current_inode",
    "current_namespace",
    "describe",
    "entry_error",
    "for_each_netns",
    "namespaces",
    "opened",
    "read_files",
    "refusal_notes",
    "resolve",
]

T = TypeVar("T")

#: The calling thread's own namespace (thread-self: setns changes threads, not processes).
_OWN: Final = "/proc/thread-self/ns/net"
_RUN_NETNS: Final = "/run/netns"
#: ioctl(fd, NS_GET_NSTYPE) = _IO(0xb7, 0x3) (linux/nsfs.h, kernel 4.11): the namespace type.
_NS_GET_NSTYPE: Final = 0xB703


# --- containers, from cgroup paths


class CgroupPattern(NamedTuple):
    """One cgroup path format of one runtime: ``regex`` is searched in a cgroup path.

    Named groups: ``id`` (container id), ``pod`` (Kubernetes pod uid, ``_`` or ``-``
    separated), ``name`` (a name the path itself gives; it is also the id when there is no
    ``id`` group). ``example`` is a real path of this form.
    """

    runtime: str
    regex: str
    example: str


_HEX64: Final = "[0-9a-f]{64}"
_UID: Final = "[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_EX_ID: Final = "4c01db0b339c" + "a1b2c3d4" * 6 + "5e6f"
_EX_POD: Final = "5f9d6a2b_8c1e_4f3a_9b7d_2e4c6a8f0b1d"

#: The cgroup path formats, most specific first (the first row that matches wins): a pod's
#: containers sit under kubepods whatever the runtime, and a runtime's scope must win over the
#: systemd service row at the end.
CGROUP_PATTERNS: Final[tuple[CgroupPattern, ...]] = (
    CgroupPattern(
        "containerd",
        rf"kubepods-(?:[a-z]+-)?pod(?P<pod>{_UID})\.slice/cri-containerd-(?P<id>{_HEX64})\.scope",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_EX_POD}.slice/"
        f"cri-containerd-{_EX_ID}.scope"),
    CgroupPattern(
        "cri-o",
        rf"kubepods-(?:[a-z]+-)?pod(?P<pod>{_UID})\.slice/crio-(?P<id>{_HEX64})\.scope",
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{_EX_POD}.slice/"
        f"crio-{_EX_ID}.scope"),
    CgroupPattern(
        "docker",
        rf"kubepods-(?:[a-z]+-)?pod(?P<pod>{_UID})\.slice/docker-(?P<id>{_HEX64})\.scope",
        f"/kubepods.slice/kubepods-pod{_EX_POD}.slice/docker-{_EX_ID}.scope"),
    CgroupPattern(
        "cri-o",
        rf"/kubepods(?:/[a-z]+)?/pod(?P<pod>{_UID})/crio-(?P<id>{_HEX64})(?:/|$)",
        f"/kubepods/burstable/pod{_EX_POD.replace('_', '-')}/crio-{_EX_ID}"),
    CgroupPattern(
        # cgroupfs driver: the path does not say which CRI runtime (containerd, cri-dockerd).
        "cri",
        rf"/kubepods(?:/[a-z]+)?/pod(?P<pod>{_UID})/(?P<id>{_HEX64})(?:/|$)",
        f"/kubepods/besteffort/pod{_EX_POD.replace('_', '-')}/{_EX_ID}"),
    CgroupPattern("docker", rf"/docker-(?P<id>{_HEX64})\.scope(?:/|$)",
                  f"/system.slice/docker-{_EX_ID}.scope"),
    CgroupPattern("docker", rf"/docker/(?P<id>{_HEX64})(?:/|$)", f"/docker/{_EX_ID}"),
    CgroupPattern("podman", rf"/libpod-(?P<id>{_HEX64})\.scope(?:/|$)",
                  f"/machine.slice/libpod-{_EX_ID}.scope"),
    CgroupPattern("podman", rf"/libpod_parent/libpod-(?P<id>{_HEX64})(?:/|$)",
                  f"/libpod_parent/libpod-{_EX_ID}"),
    CgroupPattern("lxc", r"/lxc\.payload\.(?P<name>[^/]+)", "/lxc.payload.web01"),
    CgroupPattern("lxc", r"^/lxc/(?P<name>[^/]+)", "/lxc/web01"),
    CgroupPattern("systemd-nspawn", r"/machine\.slice/systemd-nspawn@(?P<name>[^/]+)\.service",
                  "/machine.slice/systemd-nspawn@build01.service/payload"),
    CgroupPattern("systemd-machined", r"/machine\.slice/machine-(?P<name>[^/]+)\.scope",
                  r"/machine.slice/machine-qemu\x2d1\x2dvm01.scope"),
    # Greedy: the deepest .service, so a user manager's own units win over user@UID.service.
    CgroupPattern("systemd", r"^.*/(?P<name>[^/]+\.service)(?:/|$)",
                  "/system.slice/nginx.service"),
)

_COMPILED: Final = tuple(re.compile(p.regex) for p in CGROUP_PATTERNS)


@dataclass(frozen=True, slots=True)
class Container:
    """What the cgroup path of a namespace's processes says it belongs to.

    ``runtime``: docker, containerd, cri-o, cri (Kubernetes, runtime not in the path), podman,
    lxc, systemd-nspawn, systemd-machined or systemd (a service, e.g. PrivateNetwork=yes).
    ``id``: the container id (for name-only runtimes, the name); ``pod_uid``: the Kubernetes pod
    uid, dash-separated; ``name``: where it can be read without asking a daemon (the path, or
    Docker's config.v2.json, or the /var/log/pods directory of the pod), else None.
    """

    runtime: str
    id: str
    pod_uid: str | None = None
    name: str | None = None

    @property
    def short_id(self) -> str:
        """The id as ``docker ps`` shows it: 12 characters of a hex id, else the whole id."""
        return self.id[:12] if re.fullmatch(_HEX64, self.id) else self.id

    def as_dict(self) -> dict[str, object]:
        """Return the container for JSON."""
        return {"runtime": self.runtime, "id": self.id, "pod_uid": self.pod_uid,
                "name": self.name}


def _match(path: str) -> tuple[int, re.Match[str]] | None:
    for index, regex in enumerate(_COMPILED):
        m = regex.search(path)
        if m:
            return index, m
    return None


def _unescape_unit(name: str) -> str:
    # systemd escapes unit names: "machine-qemu\x2d1\x2dvm.scope" is qemu-1-vm.
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def container_from_cgroup(path: str) -> Container | None:
    """Return the Container a cgroup path names (one row of ``CGROUP_PATTERNS``), or None.

    ``container_from_cgroup("/system.slice/docker-<64 hex>.scope")`` is
    ``Container("docker", "<64 hex>")``. No daemon is asked; the name comes from the path.
    """
    found = _match(path)
    if found is None:
        return None
    index, m = found
    groups = m.groupdict()
    name = groups.get("name")
    name = None if name is None else _unescape_unit(name)
    cid = groups.get("id") or name or ""
    pod = groups.get("pod")
    return Container(CGROUP_PATTERNS[index].runtime, cid,
                     None if pod is None else pod.replace("_", "-"), name)


def _cgroup_paths(text: str) -> list[str]:
    """Return the paths in /proc/PID/cgroup text: v2 (``0::PATH``) first, then v1 lines."""
    v2: list[str] = []
    v1: list[str] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        _controllers, sep, path = rest.partition(":")
        if not sep:
            continue
        (v2 if hierarchy == "0" else v1).append(path)
    return v2 + v1


def container_of_pid(pid: int) -> Container | None:
    """Return the Container process ``pid`` runs in, from /proc/PID/cgroup; None if none/gone.

    A name the path does not give is read where the runtime keeps it on disk (Docker's
    config.v2.json, the pod's /var/log/pods directory), never from a daemon.
    """
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:  # exited, or no cgroups here
        return None
    for path in _cgroup_paths(text):
        c = container_from_cgroup(path)
        if c is not None:
            return _named(c)
    return None


def _named(c: Container) -> Container:
    lookup = _NAME_LOOKUPS.get(c.runtime)
    name = c.name
    if name is None and lookup is not None:
        name = lookup(c)
    if name is None and c.pod_uid is not None:
        name = _pod_name(c.pod_uid)
    return c if name == c.name else Container(c.runtime, c.id, c.pod_uid, name)


#: Where runtimes keep what names a container, on disk (tests point these at a temp dir).
_DOCKER_CONTAINERS = "/var/lib/docker/containers"
_PODMAN_CONTAINERS = "/var/lib/containers/storage/overlay-containers/containers.json"
_POD_LOGS = "/var/log/pods"


def _docker_name(c: Container) -> str | None:
    try:
        with open(f"{_DOCKER_CONTAINERS}/{c.id}/config.v2.json", encoding="utf-8") as f:
            name = json.load(f).get("Name")
    except (OSError, ValueError, AttributeError):
        return None
    return name.lstrip("/") if isinstance(name, str) and name else None


def _podman_name(c: Container) -> str | None:
    try:
        with open(_PODMAN_CONTAINERS, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("id") == c.id:
            names = entry.get("names")
            if isinstance(names, list) and names and isinstance(names[0], str):
                return names[0]
    return None


def _pod_name(pod_uid: str) -> str | None:
    # The kubelet names each pod's log directory NAMESPACE_NAME_UID.
    try:
        entries = os.listdir(_POD_LOGS)
    except OSError:
        return None
    suffix = "_" + pod_uid
    for entry in entries:
        if entry.endswith(suffix):
            namespace, _, pod = entry[: -len(suffix)].partition("_")
            return f"{namespace}/{pod}" if pod else namespace
    return None


_NAME_LOOKUPS: Final[dict[str, Callable[[Container], str | None]]] = {
    "docker": _docker_name,
    "podman": _podman_name,
}


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


def _own() -> os.stat_result:
    return os.stat(_OWN)


def current_inode() -> int:
    """Return the inode of the calling thread's network namespace (its identity)."""
    return _own().st_ino


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
        entries = sorted(os.listdir(_RUN_NETNS))
    except OSError:
        return found
    for name in entries:
        try:
            st = os.stat(f"{_RUN_NETNS}/{name}")
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
    own = _own()
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
            path = f"{_RUN_NETNS}/{name}"
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
        return [f"{_RUN_NETNS}/{text}"], f"network namespace '{text}'"
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
    if stat.S_ISREG(mode) and os.path.dirname(path) == _RUN_NETNS:
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
    nsfs = _own().st_dev
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
                                          f"in {_RUN_NETNS} (ip netns list shows the names)")


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
    if netns is None or (isinstance(netns, NetNamespace) and netns.inode == _own().st_ino):
        yield None
        return
    fd, what = _open(netns)
    try:
        st = os.fstat(fd)
        own = _own()
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
        return NetNamespace(inode, f"{_RUN_NETNS}/{path}", path)
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
