"""``pysockopt keepalive``: the host's defaults, or a config for a detection budget."""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import TextIO

from .._format import count, duration
from ..errors import InvalidConfigError
from ..keepalive import KeepaliveConfig, system_keepalive
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
from .sockets import state_arg


def _seconds(text: str) -> float:
    value: float = number(text, float)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a number of seconds > 0")
    return value


def _probes(text: str) -> int:
    value: int = number(text)
    if value < 1:
        raise ValueError("must be at least 1 probe")
    return value


def _in_options(err: InvalidConfigError, seconds: float, probes: int | None) -> str:
    """Say a for_detection() refusal with the options: ``--detect 2: must be at least ...``."""
    if err.field == "user_timeout":
        allowed = err.allowed.split(" for ")[0]
        return f"--user-timeout: must be {allowed} for --detect {seconds:g}"
    if probes is None:  # as many as fit: the refusal is for the fewest, one
        probes = 1
    why = str(err).partition(f"allowed: {err.allowed}")[2].lstrip(": ")
    allowed = err.allowed.split(" for ")[0]
    if err.field == "count":
        text = f"--count {probes}: must be {allowed} for --detect {seconds:g}"
    else:
        text = f"--detect {seconds:g}: must be {allowed} s with {count(probes, 'probe')}"
    return text + (f" ({why})" if why else "")


def _keepalive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detect", action=checked(_seconds), metavar="SECONDS",
                   help="print a config that declares a silent peer dead within SECONDS")
    p.add_argument("--count", action=checked(_probes), metavar="N",
                   help="keepalive probes for --detect (default: as many as fit, up to 3)")
    p.add_argument("--user-timeout", action=checked(_seconds), metavar="SECONDS",
                   help="TCP_USER_TIMEOUT for --detect (default: half the budget)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _live_args(p)


@command("keepalive", "host keepalive defaults, or a config for a detection budget",
         _keepalive_args, "Exit status: 0 shown, 2 error (bad usage included); with --pid, "
         "1 when a connection has no keepalive (audit) or a socket was refused (apply).")
def _keepalive(args: argparse.Namespace, out: TextIO) -> int:
    if args.count is not None and args.detect is None:
        raise UsageError("--count needs --detect SECONDS (it is the probes in that budget)")
    if args.user_timeout is not None and args.detect is None:
        raise UsageError("--user-timeout needs --detect SECONDS (it is part of that budget)")
    if args.pid is not None or args.apply or args.state or args.port is not None:
        return _live(args, out)
    if args.detect is not None:
        probes = args.count
        try:
            config = KeepaliveConfig.for_detection(args.detect, count=probes,
                                                   user_timeout=args.user_timeout)
        except InvalidConfigError as err:
            raise UsageError(_in_options(err, args.detect, probes)) from err
        if args.json:
            emit_json(out, {
                "idle": config.idle, "interval": config.interval, "count": config.count,
                "user_timeout_ms": config.user_timeout_ms,
                "detection_time": config.detection_time,
                "worst_case_detection": config.worst_case_detection,
                "socket_options": config.socket_options(),
            })
            return EXIT_OK
        out.write(
            f"KeepaliveConfig(idle={config.idle}, interval={config.interval}, "
            f"count={config.count}, user_timeout_ms={config.user_timeout_ms})\n"
            f"  an idle connection to a vanished peer is dropped after"
            f" {duration(config.detection_time)} (idle {config.idle} s, then"
            f" {count(config.probes, 'probe')} {config.interval} s apart, ended by the user"
            " timeout);\n"
            f"  unacknowledged data fails it {duration((config.user_timeout_ms or 0) / 1000)}"
            f" after it was sent (TCP_USER_TIMEOUT): a dead peer is found within"
            f" {duration(config.worst_case_detection or 0)} whatever is written\n\n"
            "Use it:\n"
            f"  config = pysockopt.KeepaliveConfig.for_detection({args.detect:g}"
            + (f", count={probes}" if probes is not None else "")
            + (f", user_timeout={args.user_timeout:g}" if args.user_timeout is not None else "")
            + ")\n"
            "  pysockopt.apply_keepalive(sock, config)      # any TCP socket; on a listener once,\n"
            "                                               # accepted sockets inherit it\n"
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


# --- a running process: audit (--pid), apply (--pid --detect S --apply)


def _pid(text: str) -> int:
    value: int = number(text)
    if value <= 0:
        raise ValueError("must be a process id > 0")
    return value


def _live_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pid", action=checked(_pid), metavar="PID",
                   help="audit the keepalive of process PID's TCP sockets (pidfd_getfd)")
    port_arg(p)
    p.add_argument("--state", action=checked(state_arg, append=True), metavar="S",
                   help="with --pid: only sockets in this state, e.g. established (repeatable)")
    p.add_argument("--apply", action="store_true",
                   help="with --pid and --detect: change the live sockets (else a dry run)")


def _live(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.remote import apply_keepalive_to_process, audit_process
    from .kill import log_to_stderr

    if args.pid is None:
        raise UsageError("--apply, --state and --port act on a running process: give --pid PID")
    if args.detect is None:
        if args.apply:
            raise UsageError("--apply needs --detect SECONDS (the budget to apply)")
        if args.state:
            raise UsageError("--state selects what --detect would change: give --detect")
        # The pid was given before this command started: a younger process holding it
        # now took it by reuse, and is not the one asked about.
        audit = audit_process(args.pid, port=args.port, started_before_caller=True)
        if args.json:
            emit_json(out, audit.as_dict())
        else:
            rows = []
            # Sockets from more than one network namespace: say which each one is in.
            spaces = {None if s.connection.netns is None else s.connection.netns.inode
                      for s in audit.sockets}
            for s in audit.sockets:
                ka = s.keepalive
                enabled = s.keepalive_enabled
                timer = (f"{s.connection.timer.label}({s.connection.expires_ms / 1000:.1f}s)"
                         if s.connection.timer else "-")
                rows.append([s.fd, s.state.label, s.connection.local, s.connection.remote,
                             "?" if enabled is None else "on" if enabled else "off",
                             *((ka.idle, ka.interval, ka.count, ka.user_timeout_ms)
                               if ka else (None,) * 4),
                             None if s.detection_time is None else duration(s.detection_time),
                             timer, s.source]
                            + ([s.connection.netns.label if s.connection.netns else "-"]
                               if len(spaces) > 1 else []))
            if rows:
                table(out, ["fd", "State", "Local", "Peer", "keepalive", "idle", "intvl",
                            "cnt", "user_timeout_ms", "detects", "timer", "read via"]
                      + (["netns"] if len(spaces) > 1 else []), rows)
                out.write("\n")
            out.write(audit.summary() + "\n")
        return EXIT_FOUND if audit.without_keepalive else EXIT_OK
    probes = args.count
    try:
        config = KeepaliveConfig.for_detection(args.detect, count=probes,
                                               user_timeout=args.user_timeout)
    except InvalidConfigError as err:
        raise UsageError(_in_options(err, args.detect, probes)) from err
    # Each socket's line once: on stdout for people; with --json, stdout is the machine's
    # and the lines show on stderr as they happen.
    with log_to_stderr("keepalive") if args.json else contextlib.nullcontext():
        changes = apply_keepalive_to_process(args.pid, config, port=args.port,
                                             states=args.state, dry_run=not args.apply,
                                             started_before_caller=True)
    if args.json:
        emit_json(out, {"dry_run": not args.apply, "pid": args.pid,
                        "config": {"idle": config.idle, "interval": config.interval,
                                   "count": config.count,
                                   "user_timeout_ms": config.user_timeout_ms},
                        "sockets": [c.as_dict() for c in changes]})
    else:
        for c in changes:
            out.write(c.describe() + "\n")
        failed = sum(c.error is not None for c in changes)
        if args.apply:
            out.write(f"\n{len(changes) - failed} socket(s) set and read back, "
                      f"{failed} refused.\n")
        else:
            out.write(f"\nDry run: {len(changes) - failed} socket(s) would be set"
                      + (f", {failed} cannot be (see above)" if failed else "")
                      + ". Add --apply to change them.\n")
        if any(c.socket.is_listener for c in changes):
            out.write("Listeners included: connections they accept from now on inherit "
                      "these settings (Linux); connections accepted earlier were set above.\n")
    return EXIT_FOUND if any(c.error is not None for c in changes) else EXIT_OK
