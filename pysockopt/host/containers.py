"""The container a network namespace belongs to, from its processes' cgroup paths.

Attribution: the cgroup path of a namespace's processes, matched against ``CGROUP_PATTERNS``
(a table of data, one row per path format of each runtime); a name the path does not give is
read where the runtime keeps it on disk, never from a daemon. A new runtime is a row of
``CGROUP_PATTERNS`` (and, when its names live on disk, a lookup in ``_NAME_LOOKUPS``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = [
    "CGROUP_PATTERNS",
    "CgroupPattern",
    "Container",
    "container_from_cgroup",
    "container_of_pid",
]


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
