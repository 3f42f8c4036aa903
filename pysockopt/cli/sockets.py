"""``pysockopt states`` and ``pysockopt conns``: the host's TCP sockets, like netstat and ss."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .._format import ss_timer
from ..errors import InvalidConfigError
from ..tcpinfo import TcpState
from ._common import EXIT_OK, checked, command, emit_json, port_arg, table
from .netns import NETNS_EXIT, add_netns_args, header, per_netns, write_incomplete, write_notes

_LISTS = "Exit status: 0 listed, 2 error (bad usage included); never 1. " + NETNS_EXIT


def state_arg(text: str) -> TcpState:
    """Parse a ``--state`` argument (any command's); ValueError lists the accepted names."""
    from ..host.connections import parse_state

    try:
        return parse_state(text)
    except InvalidConfigError:
        names = ", ".join(s.label for s in TcpState if s is not TcpState.NEW_SYN_RECV)
        raise ValueError(f"unknown state {text.strip()!r} (one of: {names}; any case, "
                         "- or _)") from None


def _states_args(p: argparse.ArgumentParser) -> None:
    port_arg(p)
    add_netns_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("states", "count TCP sockets per state (like netstat -nat | sort | uniq -c)",
         _states_args, _LISTS)
def _states(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import state_counts

    grouped = per_netns(args, lambda ns: state_counts(port=args.port, netns=ns))
    if grouped is not None:
        if args.json:
            emit_json(out, {"port": args.port, **grouped.as_json(
                "states", lambda c: {"total": sum(c.values()),
                                     "counts": {s.label: n for s, n in _ordered(c)}})})
            return EXIT_OK
        write_notes(out, grouped)
        for ns, counts in grouped.results:
            out.write(f"== {header(ns)}\n")
            _states_table(out, counts)
            out.write("\n")
        write_incomplete(out, grouped)
        return EXIT_OK
    counts = state_counts(port=args.port)
    if args.json:
        emit_json(out, {"port": args.port, "total": sum(counts.values()),
                        "counts": {s.label: n for s, n in _ordered(counts)}})
        return EXIT_OK
    _states_table(out, counts)
    return EXIT_OK


def _ordered(counts: dict[Any, int]) -> list[tuple[Any, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _states_table(out: TextIO, counts: dict[Any, int]) -> None:
    table(out, ["state", "sockets"], [(s.label, n) for s, n in _ordered(counts)]
          + [("total", sum(counts.values()))])


def _conns_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", action=checked(state_arg, append=True), metavar="S",
                   help="only this state, e.g. CLOSE_WAIT or close-wait (repeatable)")
    port_arg(p)
    add_netns_args(p)
    p.add_argument("-i", "--info", action="store_true",
                   help="add TCP_INFO: rtt, cwnd, retransmits, idle times (like ss -tin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("conns", "list TCP sockets (like ss -tan, or ss -tin with -i)", _conns_args, _LISTS)
def _conns(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import connections

    states = args.state
    grouped = per_netns(args, lambda ns: connections(states=states, port=args.port,
                                                     with_info=args.info, netns=ns))
    if grouped is not None:
        if args.json:
            emit_json(out, grouped.as_json("connections",
                                           lambda conns: [c.as_dict() for c in conns]))
            return EXIT_OK
        write_notes(out, grouped)
        for ns, conns in grouped.results:
            out.write(f"== {header(ns)}\n")
            _conns_table(out, conns, args.info)
            out.write("\n")
        write_incomplete(out, grouped)
        return EXIT_OK
    conns = connections(states=states, port=args.port, with_info=args.info)
    if args.json:
        emit_json(out, [c.as_dict() for c in conns])
        return EXIT_OK
    _conns_table(out, conns, args.info)
    return EXIT_OK


def _conns_table(out: TextIO, conns: list[Any], info: bool) -> None:
    columns = ["State", "Recv-Q", "Send-Q", "Local", "Peer", "Timer"]
    if info:
        columns += ["rtt_ms", "cwnd", "retrans", "idle_ms"]
    rows: list[list[object]] = []
    for c in conns:
        timer = ss_timer(c.timer.label, c.expires_ms, c.retrans) if c.timer else ""
        row: list[object] = [c.state.label, c.rqueue, c.wqueue, c.local, c.remote, timer]
        if info:
            i = c.info
            # A listener has no peer: its rtt, cwnd and idle times are placeholders.
            if i is None or c.state == TcpState.LISTEN:
                row += [None, None, None, None]
            else:
                idle = None if i.last_data_recv is None else i.last_data_recv
                rtt = None if i.rtt is None else round(i.rtt / 1000, 3)
                row += [rtt, i.snd_cwnd, i.total_retrans, idle]
        rows.append(row)
    table(out, columns, rows)
