"""``pysockopt netns``, and ``--netns NS`` / ``--all-netns`` for the socket commands.

``pysockopt netns`` lists every network namespace (inode, name, container, pids, sockets).
``add_netns_args`` and ``per_netns`` give ``states``, ``conns`` and ``diagnose`` the same two
options and the same grouping: one block per namespace under a header naming it, and at the end
what could not be looked at. JSON has the same structure: ``{"namespaces": [{"netns": ...,
...}], "skipped": [...], "notes": [...], "complete": bool}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TextIO, TypeVar

from ..errors import InvalidConfigError
from ._common import EXIT_OK, command, emit_json, table

T = TypeVar("T")

__all__ = ["Grouped", "add_netns_args", "header", "netns_value", "per_netns", "write_notes"]


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


def _printable(text: str) -> str:
    # Names come from /run/netns, cgroup paths and container configs: never raw to a terminal.
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def header(ns: Any) -> str:
    """One line naming a namespace: name, inode, container runtime + short id, pod, pids."""
    from ..host.namespaces import current_inode

    parts = [f"netns {ns.label}" + (f" (inode {ns.inode})" if ns.name is not None else "")
             + (", this namespace" if ns.inode == current_inode() else "")]
    c = ns.container
    if c is not None:
        parts.append(f"{c.runtime} {c.short_id}" + (f" ({c.name})" if c.name else ""))
        if c.pod_uid:
            parts.append(f"pod {c.pod_uid}")
    if ns.pids:
        shown = ", ".join(str(p) for p in ns.pids[:5])
        more = f" and {len(ns.pids) - 5} more" if len(ns.pids) > 5 else ""
        parts.append(f"pids {shown}{more}")
    else:
        parts.append("no processes")
    return _printable(" · ".join(parts))


@dataclass(frozen=True)
class Grouped(Generic[T]):
    """What ``per_netns`` found: (namespace, result) pairs, and what could not be seen."""

    results: list[tuple[Any, T]]
    skipped: list[Any]
    notes: list[str]
    complete: bool

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
        }


def per_netns(args: argparse.Namespace, fn: Callable[[Any], T]) -> Grouped[T] | None:
    """Run ``fn(netns)`` for ``--netns`` or for every namespace (``--all-netns``).

    None when neither option was given (the caller's namespace, output as before).
    """
    from ..host.namespaces import current_namespace, for_each_netns, resolve

    if args.all_netns:
        found = for_each_netns(fn)
        return Grouped(list(found.results), list(found.skipped), list(found.notes),
                       found.complete)
    if args.netns is None:
        return None
    try:
        ns = resolve(netns_value(args.netns))
    except InvalidConfigError as err:
        raise ValueError(_bad_netns(args.netns, err)) from None
    if ns is None:
        ns = current_namespace()
    return Grouped([(ns, fn(ns))], [], [], True)


def _bad_netns(text: str, err: Exception) -> str:
    """``--netns /tmp/fifo: not a network namespace (a FIFO); give ...``: the option's words."""
    from ..host.namespaces import NotANetnsError

    if isinstance(err, NotANetnsError):
        return (f"--netns {text}: not a network namespace ({err.kind}); give an ip netns "
                "name, /run/netns/NAME, /proc/PID/ns/net or a pid")
    allowed = getattr(err, "allowed", None)
    return f"--netns {text}: must be {allowed}" if allowed else f"--netns {text}: {err}"


def write_notes(out: TextIO, grouped: Grouped[Any]) -> None:
    """Say what could not be looked at (never let silence read as "nothing there")."""
    for note in grouped.notes:
        out.write(_printable(f"Not looked at: {note}.") + "\n")


# --- pysockopt netns


def _netns_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("netns", "list network namespaces: inode, name, container, pids, sockets",
         _netns_args)
def _netns(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import state_counts
    from ..host.namespaces import NetnsPermissionError, current_inode, namespaces

    found = namespaces()
    own = current_inode()
    rows: list[tuple[Any, int | None, str | None]] = []
    refused = 0
    for ns in found:
        try:
            total: int | None = sum(state_counts(netns=ns).values())
            why = None
        except NetnsPermissionError:
            total, why = None, "needs root"
            refused += 1
        except FileNotFoundError:  # vanished since it was listed
            total, why = None, "vanished"
        rows.append((ns, total, why))
    notes = list(found.notes)
    if refused:
        notes.append(f"the sockets of {refused} namespace(s) could not be counted: entering "
                     "a namespace needs CAP_SYS_ADMIN (run as root)")
    if args.json:
        emit_json(out, {
            "namespaces": [{**ns.as_dict(), "current": ns.inode == own, "sockets": total,
                            "error": why} for ns, total, why in rows],
            "notes": notes,
            "complete": not notes,
        })
        return EXIT_OK
    body = []
    for ns, total, why in rows:
        c = ns.container
        container = "-" if c is None else (
            f"{c.runtime} {c.short_id}" + (f" ({c.name})" if c.name else "")
            + (f" pod {c.pod_uid}" if c.pod_uid else ""))
        pids = ",".join(str(p) for p in ns.pids[:4]) + (
            f",+{len(ns.pids) - 4}" if len(ns.pids) > 4 else "")
        body.append((ns.inode, _printable(ns.name or "-") + ("*" if ns.inode == own else ""),
                     _printable(container), pids or "-", total if why is None else why))
    table(out, ["inode", "name", "container", "pids", "sockets"], body)
    out.write("(* this namespace)\n")
    for note in notes:
        out.write(_printable(f"Not looked at: {note}.") + "\n")
    return EXIT_OK
