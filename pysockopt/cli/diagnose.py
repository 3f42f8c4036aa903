"""``pysockopt diagnose``: the classic TCP problems, found and explained."""

from __future__ import annotations

import argparse
from typing import TextIO

from ._common import EXIT_FOUND, EXIT_OK, command, emit_json, port_arg


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    port_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("diagnose", "find CLOSE_WAIT leaks, SYN floods, full accept queues, TIME_WAIT "
         "pressure, dead peers", _diagnose_args)
def _diagnose(args: argparse.Namespace, out: TextIO) -> int:
    from ..host import diagnose

    result = diagnose(port=args.port)
    if args.json:
        emit_json(out, result.as_dict())
    else:
        out.write(result.render())
    return EXIT_OK if result.ok else EXIT_FOUND
