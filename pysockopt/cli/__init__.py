"""The ``pysockopt`` command: keepalive, errno, states, conns, diagnose, exporter.

Human-readable tables by default, ``--json`` for machines. Exit status: 0 when all is well,
1 when the command found problems, 2 on usage or runtime errors (like grep and diff). Each
subcommand is one module here that registers itself with ``_common.command``; this module only
parses and dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..errors import InvalidConfigError
from . import (  # noqa: F401  # each registers its commands
    diagnose,
    errno,
    exporter,
    keepalive,
    netns,
    sockets,
)
from ._common import COMMANDS, EXIT_ERROR, EXIT_OK

__all__ = ["build_parser", "main"]


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
