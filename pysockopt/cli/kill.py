"""``pysockopt kill``: abort stuck sockets with SOCK_DESTROY; a dry run unless ``--yes``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

from .._format import processes
from ..tcpinfo import TcpState
from ._common import (
    EXIT_FOUND,
    EXIT_OK,
    UsageError,
    checked,
    command,
    emit_json,
    number,
    port_arg,
    table,
)
from .netns import netns_value
from .sockets import state_arg


@contextlib.contextmanager
def log_to_stderr(name: str) -> Iterator[None]:
    """Show the ``pysockopt.live`` log (one line per changed socket) on stderr meanwhile."""
    logger = logging.getLogger("pysockopt.live")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"pysockopt {name}: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _pid(text: str) -> int:
    value: int = number(text)
    if value <= 0:
        raise ValueError("must be a process id > 0")
    return value


def _idle(text: str) -> float:
    value: float = number(text, float)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number of seconds >= 0")
    return value


def _kill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", action=checked(state_arg, append=True), metavar="S",
                   help="only sockets in this state, e.g. close-wait (repeatable)")
    port_arg(p)
    p.add_argument("--remote", metavar="ADDR[:PORT]",
                   help="only sockets to this peer (10.0.0.5, 10.0.0.5:443, [::1]:80)")
    p.add_argument("--pid", action=checked(_pid), metavar="PID",
                   help="only sockets held by process PID")
    p.add_argument("--idle-over", action=checked(_idle), metavar="SECONDS",
                   help="only sockets that received nothing (data or ACK) for SECONDS "
                        "(TCP_INFO; never matches TIME_WAIT)")
    p.add_argument("--include-listeners", action="store_true",
                   help="allow LISTEN sockets (the service stops accepting connections)")
    p.add_argument("--netns", metavar="NS",
                   help="in network namespace NS: an ip netns name, a path or a pid (needs root)")
    p.add_argument("--yes", action="store_true",
                   help="destroy them (without it: list what would be destroyed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("kill", "abort stuck TCP sockets (SOCK_DESTROY); a dry run unless --yes", _kill_args,
         "Exit status: 0 listed (dry run) or all destroyed / already gone, 1 a destroy failed, "
         "2 error (no filter, LISTEN without --include-listeners, bad usage).")
def _kill(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import processes_of
    from ..host.destroy import destroy, destroy_candidates, outcome

    if (args.state is None and args.port is None and args.remote is None and args.pid is None
            and args.idle_over is None):
        raise UsageError("refusing to select every socket: give at least one filter "
                         "(--state, --port, --remote, --pid or --idle-over)")
    if args.state is not None and TcpState.LISTEN in args.state and not args.include_listeners:
        raise UsageError("refusing LISTEN sockets: destroying a listener stops the service "
                         "accepting connections; add --include-listeners to mean it")
    targets = destroy_candidates(
        states=args.state, port=args.port, remote=args.remote, pid=args.pid,
        idle_over=args.idle_over, include_listeners=args.include_listeners,
        netns=None if args.netns is None else netns_value(args.netns),
        started_before_caller=True)
    owners = processes_of([c.inode for c in targets])
    results: list[OSError | None] | None = None
    if args.yes:
        # Each socket's line once: in the table on stdout; with --json, on stderr.
        with log_to_stderr("kill") if args.json else contextlib.nullcontext():
            results = destroy(targets)
    if args.json:
        rows = []
        for i, c in enumerate(targets):
            record = c.as_dict()
            record["processes"] = [{"pid": p.pid, "command": p.command}
                                for p in owners.get(c.inode, ())]
            if results is not None:
                record["outcome"] = outcome(results[i]).split(":")[0]
                record["error"] = None if results[i] is None else str(results[i])
            rows.append(record)
        emit_json(out, {"dry_run": results is None, "sockets": rows})
    else:
        header = ["State", "Local", "Peer", "Idle_s", "Process"]
        if results is not None:
            header.append("Outcome")
        body: list[list[object]] = []
        for i, c in enumerate(targets):
            info = c.info
            idle = (None if info is None or info.last_data_recv is None
                    or info.last_ack_recv is None
                    else round(min(info.last_data_recv, info.last_ack_recv) / 1000, 1))
            row: list[object] = [c.state.label, c.local, c.remote, idle,
                                 processes(owners.get(c.inode, ()), most=2) or "-"]
            if results is not None:
                row.append(outcome(results[i]))
            body.append(row)
        if body:
            table(out, header, body)
        if results is None:
            out.write(f"\nDry run: {len(targets)} socket(s) would be destroyed. "
                      "Rerun with --yes to destroy exactly these.\n" if targets else
                      "No socket matches every filter: nothing would be destroyed.\n")
        else:
            done = sum(r is None for r in results)
            gone = sum(r is not None and outcome(r) == "already gone" for r in results)
            failed = len(results) - done - gone
            out.write(f"\n{done} destroyed, {gone} already gone, {failed} error(s).\n")
    if results is not None and any(r is not None and outcome(r) != "already gone"
                                   for r in results):
        return EXIT_FOUND
    return EXIT_OK
