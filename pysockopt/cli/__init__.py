"""The ``pysockopt`` command and its subcommands.

Subcommands: keepalive, errno, states, conns, diagnose, netns, watch, exporter, kill, closed.
Human-readable tables by default, ``--json`` for machines. Exit status, for every command:
0 nothing found, 1 problems found, 2 error (usage errors included), like grep and diff;
``errno --search`` that matches nothing is 1, as grep is. A reader that stops early
(``| head``) never changes the status. Each
subcommand is one module here that registers itself with ``_common.command``; this module only
parses and dispatches.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from .._format import printable
from ..errors import InvalidConfigError
from . import (  # noqa: F401  # each registers its commands
    closed,
    diagnose,
    errno,
    exporter,
    keepalive,
    kill,
    netns,
    sockets,
    watch,
)
from ._common import COMMANDS, EXIT_ERROR, EXIT_RULE, EXIT_STATUS, Output, UsageError

__all__ = ["build_parser", "main"]

#: How ``pysockopt --help`` lists the commands; any other comes after these.
_ORDER = ("keepalive", "errno", "states", "conns", "diagnose", "netns", "watch", "exporter",
          "kill", "closed")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every registered subcommand."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="pysockopt",
        description="TCP keepalive, TCP_INFO, host-wide socket diagnosis, errno explained.",
        epilog=EXIT_RULE + " `pysockopt COMMAND --help` says what each command returns.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Not required=True: argparse would then answer `pysockopt --bogus` with "COMMAND is
    # required" instead of naming --bogus; main() asks for a command itself.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    # In the order a user meets them, not the order the modules were imported in.
    order = {name: i for i, name in enumerate(_ORDER)}
    for name, help_text, add_arguments, run in sorted(
            COMMANDS, key=lambda c: order.get(c[0], len(order))):
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=EXIT_STATUS.get(name, EXIT_RULE))
        add_arguments(p)
        p.set_defaults(run=run)
        subparsers[name] = p
    return parser, subparsers


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser, subparsers = _parsers()
    args, extra = parser.parse_known_args(argv)
    where = subparsers.get(args.command or "", parser)
    if extra:
        where.error("unrecognized arguments: " + printable(" ".join(extra)))
    if args.command is None:
        parser.error("give a COMMAND: " + ", ".join(subparsers))
    return args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; return the exit status (0 nothing found, 1 problems found, 2 error).

    The status is the command's own: a reader that leaves early (``| head``, ``| true``)
    does not turn 1 or 2 into 0; output that cannot be written at all (stdout closed, disk
    full) is an error, 2.
    """
    try:
        args = _parse(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(exc.code or 0)
    output = Output(sys.stdout if out is None else out)
    try:
        status: int = args.run(args, output)
    except UsageError as err:
        status = _error(args.command, f"{err} (see pysockopt {args.command} --help)")
    except (InvalidConfigError, ValueError, LookupError, OSError) as err:
        status = _error(args.command, str(err))
    except Exception as err:  # a bug, never exit status 1 ("problems found") by accident
        status = _error(args.command, f"unexpected error: {type(err).__name__}: {_text(err)}")
    output.flush()
    if (output.broken or output.error is not None) and out is None and sys.stdout is not None:
        # What a failed flush left in Python's buffer would be flushed again at exit, fail
        # again and turn the status into 120 ("Exception ignored"; hidden where
        # PYTHONUNBUFFERED is set): point the descriptor at /dev/null, the reader has all
        # it wanted, or the failure is reported below.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
    failure = output.error
    if failure is not None:
        return _error(args.command, f"cannot write the output: {failure.strerror or failure}")
    return status


def _text(err: BaseException) -> str:
    try:
        return str(err)
    except Exception:  # a str() that fails too: the type name is all there is
        return "(no message)"


def _error(command: str, message: str) -> int:
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"pysockopt {command}: {printable(message)}\n")
    return EXIT_ERROR
