"""``pysockopt exporter``: the host's TCP sockets as Prometheus metrics, over HTTP or a textfile."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TextIO

from ..errors import InvalidConfigError
from ._common import EXIT_ERROR, EXIT_OK, command
from .netns import add_netns_args, netns_value

#: The default bind address: loopback only (docs/prometheus.md says how to expose it).
DEFAULT_LISTEN = "127.0.0.1:9464"


def _listen(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:9464`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidConfigError("listen", text, "HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)  # ":9464" asks for every address


def _ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise InvalidConfigError("ports", text, "local ports 1..65535, e.g. 80,443,5432")
        ports.append(int(part))
    return ports


def _exporter_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--listen", metavar="HOST:PORT", default=None,
                       help=f"serve /metrics here (default {DEFAULT_LISTEN}; port 0: any free "
                            "port, printed at start)")
    where.add_argument("--textfile", metavar="PATH",
                       help="write the metrics to PATH (DIR/NAME.prom) for node_exporter's "
                            "textfile collector, atomically, instead of serving them")
    p.add_argument("--interval", type=float, metavar="S",
                   help="with --textfile: rewrite it every S seconds until stopped "
                        "(default: once)")
    p.add_argument("--ports", metavar="P,P,...", default="",
                   help="local ports that also get per-port state series (at most 64)")
    p.add_argument("--top", type=int, default=5, metavar="N",
                   help="CLOSE_WAIT owners and TIME_WAIT destinations shown by name; "
                        "the rest is summed as 'other' (default 5)")
    add_netns_args(p)  # --all-netns: every series gets a netns label


@command("exporter", "serve the host's TCP sockets as Prometheus metrics, or write them for "
         "node_exporter's textfile collector", _exporter_args)
def _exporter(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        from ..prometheus import MISSING_CLIENT

        sys.stderr.write(f"pysockopt exporter: {MISSING_CLIENT}\n")
        return EXIT_ERROR
    from ..prometheus import SocketCollector, serve, write_textfile

    if args.interval is not None and (args.textfile is None or not args.interval > 0):
        raise InvalidConfigError("interval", args.interval, "seconds > 0, with --textfile")
    collector = SocketCollector(
        ports=_ports(args.ports) if args.ports else (), top=args.top,
        netns=None if args.netns is None else netns_value(args.netns),
        all_netns=args.all_netns)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.textfile is not None:
        while True:
            started = time.monotonic()
            write_textfile(args.textfile, collector)
            if args.interval is None:
                return EXIT_OK
            if stop.wait(max(0.0, args.interval - (time.monotonic() - started))):
                return EXIT_OK
    host, port = serve(*_listen(args.listen or DEFAULT_LISTEN), collector)
    shown = f"[{host}]" if ":" in host else host
    out.write(f"pysockopt exporter: serving http://{shown}:{port}/metrics\n")
    out.flush()
    stop.wait()
    return EXIT_OK
