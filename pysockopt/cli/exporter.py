"""``pysockopt exporter``: the host's TCP sockets as Prometheus metrics, over HTTP or a textfile."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from .._format import printable
from .._serving import DEFAULT_CACHE_SECONDS
from ..errors import InvalidConfigError
from ._common import EXIT_ERROR, EXIT_OK, UsageError, checked, command, number
from .netns import add_netns_args, netns_value

if TYPE_CHECKING:
    from ..prometheus import SocketCollector

#: The default bind address: loopback only (docs/prometheus.md says how to expose it).
DEFAULT_LISTEN = "127.0.0.1:9464"
#: At most this many --ports (csrc/tally.h PSO_TALLY_MAX_PORTS).
MAX_PORTS = 64


def _listen(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:9464`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)  # ":9464" asks for every address


def _ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ValueError(f"{part or 'an empty item'} is not a local port (1..65535); "
                             "give them as 80,443,5432")
        ports.append(int(part))
    if len(set(ports)) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports")
    return ports


def _top(text: str) -> int:
    value: int = number(text)
    if not 1 <= value <= 100:
        raise ValueError("must be 1..100")
    return value


def _interval(text: str) -> float:
    value: float = number(text, float)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a finite number of seconds > 0")
    return value


def _owner_deadline(text: str) -> float:
    value: float = number(text, float)
    if not math.isfinite(value) or not 0 < value <= 3600:
        raise ValueError("must be seconds, > 0 and <= 3600")
    return value


def _textfile(text: str) -> str:
    if not text.endswith(".prom"):
        raise ValueError("must end in .prom (node_exporter's textfile collector reads only "
                         "*.prom files)")
    return text


def _cache_seconds(text: str) -> float:
    value: float = number(text, float)
    if not math.isfinite(value) or not 0 <= value <= 3600:
        raise ValueError("must be 0..3600 seconds (0: every request after a scan takes a "
                         "new one)")
    return value


def _exporter_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--listen", metavar="HOST:PORT", default=None, action=checked(_listen),
                       help=f"serve /metrics here (default {DEFAULT_LISTEN}; port 0: any free "
                            "port, printed at start)")
    where.add_argument("--textfile", metavar="PATH", action=checked(_textfile),
                       help="write the metrics to PATH (DIR/NAME.prom) for node_exporter's "
                            "textfile collector, atomically, instead of serving them")
    p.add_argument("--interval", action=checked(_interval), metavar="S",
                   help="with --textfile: rewrite it every S seconds until stopped "
                        "(default: once); a failed write is said and counted, and the next "
                        "one tried")
    p.add_argument("--ports", metavar="P,P,...", default=[], action=checked(_ports),
                   help=f"local ports that also get per-port state series (at most "
                        f"{MAX_PORTS})")
    p.add_argument("--owner-deadline", action=checked(_owner_deadline), default=5.0,
                   metavar="S",
                   help="seconds the walk of /proc/*/fd for CLOSE_WAIT owners may take per "
                        "scrape; owners past it are 'unknown' and counted in "
                        "pysockopt_owner_lookup_incomplete, and the walk goes on from there "
                        "at the next scrape (default 5)")
    p.add_argument("--top", action=checked(_top), default=5, metavar="N",
                   help="CLOSE_WAIT owners and TIME_WAIT destinations shown by name; "
                        "the rest is summed as 'other' (1..100, default 5)")
    p.add_argument("--cache-seconds", action=checked(_cache_seconds), metavar="S",
                   default=DEFAULT_CACHE_SECONDS,
                   help="with --listen: a scan answers every request that comes within S "
                        f"seconds of its end (default {DEFAULT_CACHE_SECONDS:g}; 0..3600); "
                        "requests during a scan always share it")
    add_netns_args(p)  # --all-netns: per-namespace series get a netns label


#: What a non-root exporter needs to see what root sees, and what it misses without each
#: (the bit numbers of linux/capability.h; docs/deploy.md says why each is needed).
CAPABILITIES = {
    "CAP_SYS_ADMIN": (21, "other network namespaces cannot be entered (setns): they count "
                          "in pysockopt_scrape_errors_total"),
    "CAP_SYS_PTRACE": (19, "the owners of other users' sockets count as owner=\"unknown\" "
                           "and namespaces only their processes hold are not found "
                           "(/proc/PID/fd and /proc/PID/ns links)"),
    "CAP_DAC_READ_SEARCH": (2, "the owners of other users' sockets count as owner="
                               "\"unknown\" (their /proc/PID/fd directories are not "
                               "readable)"),
}


def missing_capabilities() -> list[str]:
    """Name the CAPABILITIES this process lacks (in its effective set), in their order."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            line = next((x for x in f if x.startswith("CapEff:")), "CapEff: 0")
        effective = int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        effective = 0
    return [name for name, (bit, _) in CAPABILITIES.items() if not effective >> bit & 1]


def _say_what_cannot_be_seen(all_netns: bool, netns: bool) -> None:
    for name in missing_capabilities():
        if name == "CAP_SYS_ADMIN" and not (all_netns or netns):
            continue  # the exporter's own namespace needs no setns
        _say(f"without {name}, {CAPABILITIES[name][1]}")


def _say(message: str) -> None:
    """One line on stderr, escaped (namespace names and paths may hold any character)."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"pysockopt exporter: {printable(message)}\n")
            sys.stderr.flush()


class _Changes:
    """Say a scrape's failures when they change, not at every scrape of a lasting one."""

    def __init__(self) -> None:
        self._last: str | None = None

    def __call__(self, message: str) -> None:
        if message != self._last:
            self._last = message
            _say(f"scrape error: {message}")


def _collector(args: argparse.Namespace, on_error: _Changes) -> SocketCollector:
    from ..prometheus import SocketCollector

    netns = None if args.netns is None else netns_value(args.netns)
    try:
        return SocketCollector(ports=args.ports, top=args.top, netns=netns,
                               all_netns=args.all_netns, on_error=on_error,
                               owner_deadline=args.owner_deadline)
    except InvalidConfigError as err:
        if err.field != "netns":
            raise
        raise UsageError(f"--netns {args.netns}: not a network namespace (give an ip netns "
                         "name, /run/netns/NAME, /proc/PID/ns/net or a pid)") from err
    except OSError as err:
        if netns is None:
            raise
        raise UsageError(f"--netns {args.netns}: {err.strerror or err}") from err


@command("exporter", "serve the host's TCP sockets as Prometheus metrics, or write them for "
         "node_exporter's textfile collector", _exporter_args)
def _exporter(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        from ..prometheus import MISSING_CLIENT

        sys.stderr.write(f"pysockopt exporter: {MISSING_CLIENT}\n")
        return EXIT_ERROR
    from .. import prometheus

    if args.interval is not None and args.textfile is None:
        raise UsageError("--interval needs --textfile (a server is scraped when asked)")
    collector = _collector(args, _Changes())
    _say_what_cannot_be_seen(args.all_netns, args.netns is not None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.textfile is not None:
        # The first write fails as the command (exit 2): a path that cannot be written at
        # all is a mistake to say at once. Later failures (a full disk, a directory being
        # replaced) are said, counted in pysockopt_scrape_errors_total, and retried.
        written = False
        while True:
            started = time.monotonic()
            try:
                prometheus.write_textfile(args.textfile, collector)
                written = True
            except OSError as err:  # counted by write_textfile
                reason = os.strerror(err.errno) if err.errno else str(err)
                if not written:
                    raise OSError(f"--textfile {args.textfile}: {reason}") from None
                _say(f"--textfile {args.textfile}: {reason} (trying again)")
            except Exception as err:
                if not written:
                    raise
                collector.count_error()
                _say(f"--textfile {args.textfile}: {type(err).__name__}: {err} "
                     "(trying again)")
            if args.interval is None:
                return EXIT_OK
            if _wait(stop, args.interval - (time.monotonic() - started)):
                return EXIT_OK
    bind: tuple[str, int] = args.listen or _listen(DEFAULT_LISTEN)
    # The library's serve(): one scan in flight shared, a cache window, no scan for a
    # client that has gone (pysockopt/_serving.py).
    host, port = prometheus.serve(bind[0], bind[1], collector, cache_seconds=args.cache_seconds)
    shown = f"[{host}]" if ":" in host else host
    out.write(f"pysockopt exporter: serving http://{shown}:{port}/metrics\n")
    out.flush()
    stop.wait()
    return EXIT_OK


def _wait(stop: threading.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` (any finite length: in steps a timeout can hold) for ``stop``."""
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return stop.is_set()
        if stop.wait(min(left, 3600.0)):
            return True
