"""The ``pysockopt`` command: keepalive, errno, states, conns, diagnose.

Human-readable tables by default, ``--json`` for machines. Exit status: 0 when all is well,
1 when the command found problems, 2 on usage or runtime errors (like grep and diff).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import __version__
from ._format import duration
from .errors import InvalidConfigError
from .keepalive import KeepaliveConfig, system_keepalive

__all__ = ["main"]

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_ERROR = 2

#: Each subcommand registers (name, help, add_arguments, run) here.
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace, TextIO], int]]
COMMANDS: list[Command] = []


def command(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace, TextIO], int]],
              Callable[[argparse.Namespace, TextIO], int]]:
    """Register ``run(args, out) -> exit status`` as the subcommand ``name``."""

    def register(
        run: Callable[[argparse.Namespace, TextIO], int],
    ) -> Callable[[argparse.Namespace, TextIO], int]:
        COMMANDS.append((name, help, add_arguments, run))
        return run

    return register


def emit_json(out: TextIO, data: Any) -> None:
    """Write ``data`` as indented JSON and a newline."""
    json.dump(data, out, indent=2, sort_keys=False)
    out.write("\n")


def table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write an aligned plain-text table (numbers right-aligned), like ``ss`` and ``netstat``."""
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and bool(rows)
        for i in range(len(header))
    ]
    for row in cells:
        line = "  ".join(
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        )
        out.write(line.rstrip() + "\n")


# --- keepalive


def _keepalive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detect", type=float, metavar="SECONDS",
                   help="print a config that declares a silent peer dead within SECONDS")
    p.add_argument("--count", type=int, default=3,
                   help="keepalive probes for --detect (default: 3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("keepalive", "host keepalive defaults, or a config for a detection budget",
         _keepalive_args)
def _keepalive(args: argparse.Namespace, out: TextIO) -> int:
    if args.detect is not None:
        config = KeepaliveConfig.for_detection(args.detect, count=args.count)
        if args.json:
            emit_json(out, {
                "idle": config.idle, "interval": config.interval, "count": config.count,
                "user_timeout_ms": config.user_timeout_ms,
                "detection_time": config.detection_time,
                "socket_options": config.socket_options(),
            })
            return EXIT_OK
        out.write(
            f"KeepaliveConfig(idle={config.idle}, interval={config.interval}, "
            f"count={config.count}, user_timeout_ms={config.user_timeout_ms})\n"
            f"  a silent peer is declared dead after {duration(config.detection_time)}"
            f" (idle {config.idle} + {config.count} probes x {config.interval} s);\n"
            f"  unacknowledged data fails the connection after"
            f" {duration(config.detection_time)} (TCP_USER_TIMEOUT)\n\n"
            "Use it:\n"
            f"  config = pysockopt.KeepaliveConfig.for_detection({args.detect:g}"
            + (f", count={args.count}" if args.count != 3 else "") + ")\n"
            "  pysockopt.apply_keepalive(sock, config)      # any connected TCP socket\n"
            "  config.socket_options()                      # urllib3 / requests / redis-py\n"
        )
        return EXIT_OK
    host = system_keepalive()
    if args.json:
        emit_json(out, {
            "idle": host.idle, "interval": host.interval, "count": host.count,
            "detection_time": host.detection_time, "linux_default": host.is_linux_default,
        })
        return EXIT_OK
    table(out, ["sysctl", "value", "meaning"], [
        ("net.ipv4.tcp_keepalive_time", host.idle, "seconds idle before the first probe"),
        ("net.ipv4.tcp_keepalive_intvl", host.interval, "seconds between probes"),
        ("net.ipv4.tcp_keepalive_probes", host.count, "unanswered probes before the drop"),
    ])
    out.write(
        f"\nA socket with SO_KEEPALIVE and no values of its own notices a dead peer after "
        f"{duration(host.detection_time)}.\n"
    )
    if host.detection_time > 300:
        out.write("Set per-socket values instead: pysockopt keepalive --detect 30\n")
    return EXIT_OK


# --- errno: `pysockopt errno`
# Exit status: 0 every ERRNO is known (or --search found something, or --list); 1 --search
# found nothing (like grep); 2 an ERRNO this platform does not define, or a usage error.


def _errno_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="*", metavar="ERRNO",
                   help="an errno number (104) or name (ECONNRESET, any case)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--search", "-s", metavar="TEXT",
                      help="errnos whose name, message or meaning contains every word of TEXT")
    mode.add_argument("--list", "-l", action="store_true",
                      help="every errno this platform defines (like moreutils' errno -l)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _errno_rows(infos: Sequence[Any]) -> list[tuple[object, ...]]:
    return [(i.code, i.name, " ".join(i.aliases) or "-", i.category.value, i.message)
            for i in infos]


def _errno_detail(out: TextIO, info: Any) -> None:
    import textwrap

    if not info.known:
        out.write(f"errno {info.code}: not defined on this platform\n")
    else:
        out.write(f"{info.name} ({info.code}): {info.message}\n")
    fields: list[tuple[str, str]] = []
    if info.aliases:
        fields.append(("aliases", " ".join(info.aliases)))
    fields += [
        ("category", f"{info.category.value}: {info.category.description}"),
        ("retryable", "yes" if info.retryable else "no"),
        ("action", info.action.value),
        ("meaning", info.meaning),
        ("advice", info.advice),
    ]
    for label, text in fields:
        out.write(textwrap.fill(text, width=100, initial_indent=f"  {label:<10} ",
                                subsequent_indent=" " * 13) + "\n")


@command("errno", "explain errno values in socket terms: number, name, --search, --list",
         _errno_args)
def _errno(args: argparse.Namespace, out: TextIO) -> int:
    from .errno import UnknownErrnoName, errno_info, errno_search, errno_table

    if args.query and (args.search is not None or args.list):
        sys.stderr.write("pysockopt errno: give ERRNO values, or --search, or --list\n")
        return EXIT_ERROR
    if args.search is not None or args.list:
        infos = errno_table() if args.list else errno_search(args.search)
        if args.json:
            emit_json(out, [i.as_dict() for i in infos])
        elif infos:
            table(out, ["code", "name", "aliases", "category", "message"], _errno_rows(infos))
        return EXIT_OK if infos or args.list else EXIT_FOUND
    if not args.query:
        sys.stderr.write("pysockopt errno: give an errno number or name, --search TEXT or "
                         "--list\n")
        return EXIT_ERROR
    status = EXIT_OK
    results: list[dict[str, object]] = []
    for n, query in enumerate(args.query):
        try:
            info = errno_info(int(query) if query.lstrip("-").isdigit() else query)
        except UnknownErrnoName as err:
            sys.stderr.write(f"pysockopt errno: {err}\n")
            results.append({"query": query, "known": False, "error": str(err),
                            "suggestions": list(err.suggestions)})
            status = EXIT_ERROR
            continue
        if not info.known:
            status = EXIT_ERROR
        results.append(info.as_dict())
        if not args.json:
            if n:
                out.write("\n")
            _errno_detail(out, info)
    if args.json:
        emit_json(out, results[0] if len(results) == 1 else results)
    return status


# --- tcpinfo


# --- states, conns


def _port_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, metavar="P",
                   help="only sockets whose local or remote port is P")


def _states_args(p: argparse.ArgumentParser) -> None:
    _port_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("states", "count TCP sockets per state (like netstat -nat | sort | uniq -c)",
         _states_args)
def _states(args: argparse.Namespace, out: TextIO) -> int:
    from .host.connections import state_counts

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
    _port_arg(p)
    p.add_argument("-i", "--info", action="store_true",
                   help="add TCP_INFO: rtt, cwnd, retransmits, idle times (like ss -tin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("conns", "list TCP sockets (like ss -tan, or ss -tin with -i)", _conns_args)
def _conns(args: argparse.Namespace, out: TextIO) -> int:
    from .host.connections import connections, parse_state

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


# --- diagnose


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    _port_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("diagnose", "find CLOSE_WAIT leaks, SYN floods, full accept queues, TIME_WAIT "
         "pressure, dead peers", _diagnose_args)
def _diagnose(args: argparse.Namespace, out: TextIO) -> int:
    from .host import diagnose

    result = diagnose(port=args.port)
    if args.json:
        emit_json(out, result.as_dict())
    else:
        out.write(result.render())
    return EXIT_OK if result.ok else EXIT_FOUND


# --- entry point


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="pysockopt",
        description="TCP keepalive, TCP_INFO, host-wide socket diagnosis, errno explained.",
        epilog="Exit status: 0 nothing found, 1 problems found, 2 error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 problems found, 2 error)."""
    stream = sys.stdout if out is None else out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(exc.code or 0)
    try:
        status: int = args.run(args, stream)
        stream.flush()
    except BrokenPipeError:  # `pysockopt conns | head`: the reader has all it wanted
        # Python would complain again when it flushes stdout at exit; point it at devnull.
        if out is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (InvalidConfigError, ValueError, LookupError, OSError) as err:
        sys.stderr.write(f"pysockopt {args.command}: {err}\n")
        return EXIT_ERROR
    return status
