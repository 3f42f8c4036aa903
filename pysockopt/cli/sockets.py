"""``pysockopt states`` and ``pysockopt conns``: the host's TCP sockets, like netstat and ss."""

from __future__ import annotations

import argparse
from typing import TextIO

from ._common import EXIT_OK, command, emit_json, port_arg, table


def _states_args(p: argparse.ArgumentParser) -> None:
    port_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("states", "count TCP sockets per state (like netstat -nat | sort | uniq -c)",
         _states_args)
def _states(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import state_counts

    counts = state_counts(port=args.port)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if args.json:
        emit_json(out, {"port": args.port, "total": sum(counts.values()),
                        "counts": {s.label: n for s, n in ordered}})
        return EXIT_OK
    table(out, ["state", "sockets"], [(s.label, n) for s, n in ordered]
          + [("total", sum(counts.values()))])
    return EXIT_OK


def _conns_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", action="append", metavar="S",
                   help="only this state, e.g. CLOSE_WAIT or close-wait (repeatable)")
    port_arg(p)
    p.add_argument("-i", "--info", action="store_true",
                   help="add TCP_INFO: rtt, cwnd, retransmits, idle times (like ss -tin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("conns", "list TCP sockets (like ss -tan, or ss -tin with -i)", _conns_args)
def _conns(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.connections import connections, parse_state

    states = [parse_state(s) for s in args.state] if args.state else None
    conns = connections(states=states, port=args.port, with_info=args.info)
    if args.json:
        emit_json(out, [c.as_dict() for c in conns])
        return EXIT_OK
    header = ["State", "Recv-Q", "Send-Q", "Local", "Peer", "Timer"]
    if args.info:
        header += ["rtt_ms", "cwnd", "retrans", "idle_ms"]
    rows: list[list[object]] = []
    for c in conns:
        timer = c.timer.label if c.timer else ""
        if c.timer:
            timer += f"({c.expires_ms / 1000:.1f}s,{c.retrans})"
        row: list[object] = [c.state.label, c.rqueue, c.wqueue, c.local, c.remote, timer]
        if args.info:
            i = c.info
            if i is None:
                row += [None, None, None, None]
            else:
                idle = None if i.last_data_recv is None else i.last_data_recv
                rtt = None if i.rtt is None else round(i.rtt / 1000, 3)
                row += [rtt, i.snd_cwnd, i.total_retrans, idle]
        rows.append(row)
    table(out, header, rows)
    return EXIT_OK
