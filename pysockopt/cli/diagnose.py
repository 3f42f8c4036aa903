"""``pysockopt diagnose``: the classic TCP problems, found and explained."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from ._common import EXIT_FOUND, EXIT_OK, EXIT_RULE, command, emit_json, port_arg
from .netns import Grouped, add_netns_args, header, per_netns, write_notes

if TYPE_CHECKING:
    from ..host.closed import CloseFeed, CloseTotals
    from ..host.model import Diagnosis, Thresholds
    from ..host.namespaces import NetNamespace
    from ..host.owners import OwnerCache
    from ..host.sample import Sample


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    port_arg(p)
    p.add_argument("--interval", type=seconds, metavar="S",
                   help="take two samples S seconds apart and add the rules that need time "
                        "(growing CLOSE_WAIT, drops now, ports running out, ...)")
    add_netns_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def seconds(text: str) -> float:
    """Parse a --interval value: seconds, > 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"seconds must be > 0 and <= 86400, not {text}")
    return value


def _runner(args: argparse.Namespace) -> Callable[[Any], Diagnosis]:
    from ..host import diagnose

    return lambda ns: diagnose(port=args.port, interval=args.interval, netns=ns)


def _sampled(args: argparse.Namespace) -> Grouped[Diagnosis] | None:
    """--interval with --netns/--all-netns: one wait for every namespace, not one each.

    A closed-connection log rides on the two looks of each namespace (subscribed on the
    first one's way in) and is read during the wait: the rules on closes read it.
    """
    from ..host import diagnose
    from ..host.closed import CloseFeed
    from ..host.look import Needs, look, sockets_needed

    with CloseFeed(port=args.port) as feed:
        def first(ns: Any) -> Sample:
            # The first look diagnose(interval=) takes: what the rules pick, no tcp_info.
            needs = Needs(sockets_needed(True), args.port, with_info=False)
            got = look(ns, needs, feed=feed).sample
            assert got is not None  # a look that is not the exporter's raises instead
            return got

        firsts = per_netns(args, first)
        if firsts is None:
            return None
        earlier = {ns.inode: s for ns, s in firsts.results}
        feed.wait(args.interval)

        def run(ns: Any) -> Diagnosis:
            before = earlier.get(ns.inode)
            if before is None:  # appeared in between: its own two samples
                return diagnose(port=args.port, interval=args.interval, netns=ns)
            return sampled(args.port, before, ns, feed)[0]

        return per_netns(args, run)


def sampled(port: int | None, previous: Sample | None, netns: NetNamespace | None,
            feed: CloseFeed | None, owners: OwnerCache | None = None,
            thresholds: Thresholds | None = None) -> tuple[Diagnosis, CloseTotals | None]:
    """Take one sample: ``diagnose(earlier=previous)``'s look, driving ``feed`` on its way.

    Returns the Diagnosis (the rules on closes read the closes since ``previous``) and
    those closes (None at the first sample, or without a log).
    """
    from ..host.diagnosis import diagnosis_of
    from ..host.look import Needs, look, sockets_needed
    from ..host.model import Thresholds

    t = Thresholds() if thresholds is None else thresholds
    lk = look(netns, Needs(sockets_needed(previous is not None), port, thresholds=t),
              owners=owners, feed=feed)
    return diagnosis_of(lk, t, previous), lk.closes


@command("diagnose", "find CLOSE_WAIT leaks, SYN floods, full accept queues, TIME_WAIT "
         "pressure, dead peers", _diagnose_args,
         f"{EXIT_RULE} With --all-netns: 1 when any namespace looked at has a problem. "
         "Namespaces that could not be entered (not root) do not make it 1 or 2: 0 then says "
         "only that nothing was found in what could be seen, and the output says how many "
         "were not entered, on its first line and its last (\"No problems found in what "
         "could be seen\"); the JSON has \"complete\": false and \"ok\": null.")
def _diagnose(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.owners import shared_owners

    run = _runner(args)
    # Socket inodes are host-wide: one walk of /proc/*/fd names the owners in every namespace.
    with shared_owners():
        grouped = per_netns(args, run) if args.interval is None else _sampled(args)
    if grouped is not None:
        problems = sum(1 for _, d in grouped.results if not d.ok)
        # ok: False when a problem was found; True only when every namespace was looked at
        # and none has one; None (unknown) when none of those seen has one but some were not.
        ok = False if problems else (True if grouped.complete else None)
        if args.json:
            emit_json(out, {"ok": ok, **grouped.as_json("diagnosis", lambda d: d.as_dict())})
        else:
            write_notes(out, grouped)
            for ns, d in grouped.results:
                out.write(f"== {header(ns)}\n{d.render()}\n")
            looked = f"{len(grouped.results)} network namespace(s) looked at"
            if grouped.complete:
                out.write(f"{looked}, {problems} with problems.\n")
            elif problems:
                out.write(f"{grouped.missing}. {looked}, {problems} with problems.\n")
            else:
                out.write(f"{grouped.missing}. No problems found in what could be seen "
                          f"({looked}).\n")
        return EXIT_FOUND if problems else EXIT_OK
    result = run(None)
    if args.json:
        emit_json(out, result.as_dict())
    else:
        out.write(result.render())
    return EXIT_OK if result.ok else EXIT_FOUND
