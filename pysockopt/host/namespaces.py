"""Every network namespace on the host, and the container each one belongs to.

This import path stays; the code lives in three modules, one job each:

- containers.py: the container a namespace belongs to, from cgroup paths (``CGROUP_PATTERNS``).
- census.py: discovery (``namespaces()``, ``NetNamespace``) and one call per namespace
  (``for_each_netns``).
- entering.py: a name, path or pid -> an open descriptor (``opened``), which namespace it is
  (``resolve``, ``describe``), and reading files inside it in one native trip (``read_files``).
"""

from __future__ import annotations

from ..errors import NetnsGoneError, NetnsPermissionError, NotANetnsError
from .census import (
    NamespaceList,
    NetNamespace,
    NetnsResults,
    NetnsSkipped,
    current_inode,
    current_namespace,
    for_each_netns,
    namespaces,
    refusal_notes,
)
from .containers import (
    CGROUP_PATTERNS,
    CgroupPattern,
    Container,
    container_from_cgroup,
    container_of_pid,
)
from .entering import (
    Entered,
    FileReads,
    NetnsArg,
    describe,
    entry_error,
    opened,
    read_files,
    resolve,
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
