"""``pysockopt closed``: the TCP connections closing, one line each, with why and who.

One line per close as the kernel announces it (``ss -E``): endpoints, state, lifetime (as the
looks bound it), bytes each way, retransmissions, rtt, owner, verdict; ``--json`` writes one
JSON object per close per line (the keys ``conns --json`` uses, the tcp_info fields under
``info``, ``cookie`` an integer), flushed as written, and a last ``{"summary": ...}`` object.
Ends after ``--count`` closes, after ``--for`` seconds, at Ctrl-C or SIGTERM, or when the
namespace followed is deleted; the closing summary says how many closes were seen and lost.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from types import FrameType
from typing import Any, TextIO

from .._format import printable, processes
from ._common import EXIT_FOUND, EXIT_OK, checked, command, number, port_arg
from .netns import add_netns_args, container_text, resolve_netns

_EXIT = ("Exit status: 0 every close was seen and none gave up or died with unacknowledged "
         "data; 1 closes were lost (the kernel dropped announcements, or a look found sockets "
         "gone unannounced) or some gave up / died with data unacknowledged; 2 error (bad "
         "usage included). Following other namespaces needs root; --all-netns says on its "
         "first line and in the summary which namespaces it cannot follow.")


def _count(text: str) -> int:
    value: int = number(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value: float = number(text, float)
    if not 0 < value < float("inf"):
        raise ValueError("must be a number of seconds > 0")
    return value


def _closed_args(p: argparse.ArgumentParser) -> None:
    port_arg(p)
    add_netns_args(p)
    p.add_argument("--json", action="store_true",
                   help="one JSON object per close per line, then a summary object")
    p.add_argument("--count", action=checked(_count), metavar="N",
                   help="stop after N closes")
    p.add_argument("--for", dest="duration", action=checked(_seconds), metavar="SECONDS",
                   help="stop after SECONDS")


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def line(c: Any) -> str:
    """One close as a line of text: endpoints, state, lifetime, bytes, retrans, rtt, owner."""
    i = c.info
    acked = "-" if i is None or i.bytes_acked is None else str(i.bytes_acked)
    received = "-" if i is None or i.bytes_received is None else str(i.bytes_received)
    retrans = "-" if i is None or i.total_retrans is None else str(i.total_retrans)
    rtt = "-" if i is None or i.rtt is None else f"{i.rtt / 1000:g}ms"
    lifetime = "-" if c.lifetime is None else str(c.lifetime)
    owner = "-" if not c.owner else processes(c.owner, 2)
    evidence = " ".join(f"{k}={v}" for k, v in c.evidence)
    where = ""
    if c.netns is not None:
        where = f"[{c.netns.label}" + (
            f" {container_text(c.container)}" if c.container is not None else "") + "] "
    clock = time.strftime("%H:%M:%S", time.localtime(c.time))
    text = (f"{clock} {where}{c.local} {c.remote} {c.state.label} lifetime {lifetime} "
            f"acked {acked} received {received} retrans {retrans} rtt {rtt} owner {owner} "
            f"{c.verdict.value}" + (f" ({evidence})" if evidence else ""))
    return printable(text)


@command("closed", "TCP connections as they close (like ss -E): lifetime, bytes, retransmits, "
         "owner and why each ended", _closed_args, _EXIT)
def _closed(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.closed import ClosedConnections, Verdict

    netns = None if args.netns is None else resolve_netns(args.netns)
    log = ClosedConnections(port=args.port, netns=netns, all_netns=args.all_netns)
    seen = 0
    problems = 0
    deadline = None if args.duration is None else time.monotonic() + args.duration
    old_term = signal.getsignal(signal.SIGTERM)
    with log:
        if args.all_netns and log.notes and not args.json:
            for note in log.notes:
                out.write(printable(f"note: {note}") + "\n")
        try:
            signal.signal(signal.SIGTERM, _stop)
            while args.count is None or seen < args.count:
                if not log.netns:
                    break  # every namespace followed is gone
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                for c in log.poll(timeout if timeout is not None else 1.0):
                    seen += 1
                    problems += c.verdict in (Verdict.GAVE_UP, Verdict.UNACKED_DATA)
                    out.write((json.dumps(c.as_dict()) if args.json else line(c)) + "\n")
                    if args.count is not None and seen >= args.count:
                        break
                out.flush()
                if getattr(out, "broken", False):
                    break
        except (KeyboardInterrupt, _Stop):
            pass
        finally:
            signal.signal(signal.SIGTERM, old_term)
        lost = log.lost
        summary: dict[str, Any] = {
            "seen": seen, "lost": lost, "overflows": log.overflows,
            "problems": problems, "notes": list(log.notes),
            "followed": [None if ns is None else ns.inode for ns in log.netns]}
    if args.json:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        out.write(f"{seen} close(s) seen, {lost} lost" + (
            f", {problems} gave up or died with unacknowledged data" if problems else "")
            + "\n")
        for note in summary["notes"]:
            out.write(printable(f"note: {note}") + "\n")
    return EXIT_FOUND if lost or problems else EXIT_OK
