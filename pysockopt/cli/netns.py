"""``pysockopt netns``, and ``--netns NS`` / ``--all-netns`` for the socket commands.

``pysockopt netns`` lists every network namespace (inode, name, container, pids, sockets).
``add_netns_args`` and ``per_netns`` give ``states``, ``conns`` and ``diagnose`` the same two
options and the same grouping: one block per namespace under a header naming it. What could not
be looked at comes first (never let silence read as "nothing there") and again in the last
line. JSON has the same structure: ``{"namespaces": [{"netns": ..., ...}],
"skipped": [...], "notes": [...], "complete": bool, "not_entered": N, "unseen_processes": N}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TextIO, TypeVar

from .._format import printable
from ..errors import InvalidConfigError
from ._common import EXIT_OK, command, emit_json, table

T = TypeVar("T")

__all__ = ["NETNS_EXIT", "Grouped", "add_netns_args", "container_text", "header", "netns_value",
           "per_netns", "resolve_netns", "write_incomplete", "write_notes"]

#: What --all-netns adds to a command's exit status, under its --help.
NETNS_EXIT = ("With --all-netns, namespaces that could not be entered (not root) do not change "
              "the status: the output then says how many, on its first line and its last, and "
              "the JSON has \"complete\": false.")


def add_netns_args(p: argparse.ArgumentParser) -> None:
    """Add ``--netns NS`` and ``--all-netns`` (one or the other)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--netns", metavar="NS",
                       help="look into network namespace NS: an ip netns name, a path "
                            "(/proc/PID/ns/net, /run/netns/NAME) or a pid (needs root)")
    group.add_argument("--all-netns", action="store_true",
                       help="every network namespace on the host, grouped (needs root to "
                            "enter the others)")


def netns_value(text: str) -> str | int:
    """``--netns`` text -> what ``netns=`` takes: digits are a pid, anything else a name/path.

    An ``ip netns`` name made only of digits is reached by its path, /run/netns/NAME.
    """
    return int(text) if text.isdigit() else text


def container_text(c: Any) -> str:
    """Name a Container as every output does: ``containerd 9a8b7c6d5e4f (shop/cart) · pod UID``.

    Runtime, short id, the name where known, the Kubernetes pod uid where there is one. Not
    escaped: the caller makes the whole line printable (names come from /run/netns, cgroup
    paths and container configs).
    """
    text = f"{c.runtime} {c.short_id}" + (f" ({c.name})" if c.name else "")
    return text + (f" · pod {c.pod_uid}" if c.pod_uid else "")


def header(ns: Any) -> str:
    """One line naming a namespace: name, inode, container runtime + short id, pod, pids."""
    from ..host.namespaces import current_inode

    parts = [f"netns {ns.label}" + (f" (inode {ns.inode})" if ns.name is not None else "")
             + (", this namespace" if ns.inode == current_inode() else "")]
    if ns.container is not None:
        parts.append(container_text(ns.container))
    if ns.pids:
        shown = ", ".join(str(p) for p in ns.pids[:5])
        more = f" and {len(ns.pids) - 5} more" if len(ns.pids) > 5 else ""
        parts.append(f"pids {shown}{more}")
    else:
        parts.append("no processes")
    return printable(" · ".join(parts))


@dataclass(frozen=True)
class Grouped(Generic[T]):
    """What ``per_netns`` found: (namespace, result) pairs, and what could not be seen.

    ``not_entered``: namespaces refused (not root); ``unseen``: processes whose namespace
    could not even be read, so namespaces may be missing altogether.
    """

    results: list[tuple[Any, T]]
    skipped: list[Any]
    notes: list[str]
    complete: bool
    not_entered: int = 0
    unseen: int = 0

    @property
    def missing(self) -> str:
        """Say what was not looked at, counts first; empty when complete.

        "9 network namespace(s) could not be entered; the namespace of 120 process(es) could
        not be read, so more may exist".
        """
        parts = []
        if self.not_entered:
            parts.append(f"{self.not_entered} network namespace(s) could not be entered")
        if self.unseen:
            parts.append(f"the namespace of {self.unseen} process(es) could not be read, so "
                         "more may exist")
        text = "; ".join(parts)
        return text[:1].upper() + text[1:]

    def as_json(self, key: str, payload: Callable[[T], Any]) -> dict[str, Any]:
        """Return the JSON structure shared by every ``--netns``/``--all-netns`` command."""
        from ..host.namespaces import current_inode

        own = current_inode()
        return {
            "namespaces": [{"netns": {**ns.as_dict(), "current": ns.inode == own},
                            key: payload(result)} for ns, result in self.results],
            "skipped": [s.as_dict() for s in self.skipped],
            "notes": self.notes,
            "complete": self.complete,
            "not_entered": self.not_entered,
            "unseen_processes": self.unseen,
        }


def per_netns(args: argparse.Namespace, fn: Callable[[Any], T]) -> Grouped[T] | None:
    """Run ``fn(netns)`` for ``--netns`` or for every namespace (``--all-netns``).

    None when neither option was given (the caller's namespace, output as before).
    """
    from ..host.namespaces import current_namespace, for_each_netns

    if args.all_netns:
        found = for_each_netns(fn)
        return Grouped(list(found.results), list(found.skipped), list(found.notes),
                       found.complete, len(found.refused), found.unseen)
    if args.netns is None:
        return None
    ns = resolve_netns(args.netns)
    if ns is None:
        ns = current_namespace()
    return Grouped([(ns, fn(ns))], [], [], True)


def resolve_netns(text: str) -> Any:
    """``--netns NS`` -> its NetNamespace (None: the caller's own), errors in the option's words.

    A path that is not a namespace is ``--netns /tmp/fifo: not a network namespace (a FIFO)``
    (a ValueError: exit status 2); every command that takes ``--netns`` can use this.
    """
    from ..host.namespaces import resolve

    try:
        return resolve(netns_value(text))
    except InvalidConfigError as err:
        raise ValueError(_bad_netns(text, err)) from None


def _bad_netns(text: str, err: Exception) -> str:
    """``--netns /tmp/fifo: not a network namespace (a FIFO); give ...``: the option's words."""
    from ..host.namespaces import NotANetnsError

    if isinstance(err, NotANetnsError):
        return (f"--netns {text}: not a network namespace ({err.kind}); give an ip netns "
                "name, /run/netns/NAME, /proc/PID/ns/net or a pid")
    allowed = getattr(err, "allowed", None)
    return f"--netns {text}: must be {allowed}" if allowed else f"--netns {text}: {err}"


def write_notes(out: TextIO, grouped: Grouped[Any]) -> None:
    """Say what could not be looked at, before anything else: each note, its count first."""
    for note in grouped.notes:
        out.write(printable(f"Not looked at: {note}.") + "\n")


def write_incomplete(out: TextIO, grouped: Grouped[Any]) -> None:
    """End a listing that missed namespaces with a line saying so (nothing when complete)."""
    if grouped.missing:
        out.write(f"Incomplete: {grouped.missing} (see the first lines).\n")


# --- pysockopt netns


def _netns_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("netns", "list network namespaces: inode, name, container, pids, sockets",
         _netns_args, "Exit status: 0 listed, 2 error; never 1. Namespaces that could not be "
         "entered (not root) are listed without a socket count; the output says how many, "
         "on its first line and its last, and the JSON has \"complete\": false.")
def _netns(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import state_counts
    from ..host.namespaces import current_inode, for_each_netns, namespaces

    found = namespaces()
    counted = for_each_netns(lambda ns: sum(state_counts(netns=ns).values()), found)
    totals = {ns.inode: total for ns, total in counted.results}
    skips = {s.netns.inode: s for s in counted.skipped}
    own = current_inode()
    rows: list[tuple[Any, int | None, str | None]] = []
    for ns in found:
        skip = skips.get(ns.inode)
        why = None if skip is None else (
            "vanished" if skip.reason == "vanished" else _REFUSED.get(skip.check or "", "refused"))
        rows.append((ns, totals.get(ns.inode), why))
    grouped: Grouped[int] = Grouped(list(counted.results), list(counted.skipped),
                                    list(counted.notes), counted.complete,
                                    len(counted.refused), counted.unseen)
    if args.json:
        emit_json(out, {
            "namespaces": [{**ns.as_dict(), "current": ns.inode == own, "sockets": total,
                            "error": why} for ns, total, why in rows],
            "skipped": [s.as_dict() for s in grouped.skipped],
            "notes": grouped.notes,
            "complete": grouped.complete,
            "not_entered": grouped.not_entered,
            "unseen_processes": grouped.unseen,
        })
        return EXIT_OK
    write_notes(out, grouped)
    body = []
    for ns, total, why in rows:
        container = "-" if ns.container is None else container_text(ns.container)
        pids = ",".join(str(p) for p in ns.pids[:4]) + (
            f",+{len(ns.pids) - 4}" if len(ns.pids) > 4 else "")
        # table() makes every cell printable.
        body.append((ns.inode, (ns.name or "-") + ("*" if ns.inode == own else ""),
                     container, pids or "-", total if why is None else why))
    table(out, ["inode", "name", "container", "pids", "sockets"], body)
    out.write("(* this namespace)\n")
    if not grouped.complete:
        parts = [f"{len(found)} network namespace(s) listed"]
        if grouped.not_entered:
            parts.append(f"{grouped.not_entered} could not be entered (sockets not counted)")
        if grouped.unseen:
            parts.append(f"the namespace of {grouped.unseen} process(es) could not be read, "
                         "so more may exist")
        out.write("; ".join(parts) + ".\n")
    return EXIT_OK


#: The sockets cell of a namespace that refused us, per NetnsPermissionError.check.
_REFUSED = {"setns": "needs CAP_SYS_ADMIN", "ptrace": "ptrace refused", "open": "open refused"}
