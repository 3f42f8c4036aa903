"""What every subcommand shares: registration, exit codes, tables, JSON, common arguments."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = [
    "COMMANDS", "EXIT_ERROR", "EXIT_FOUND", "EXIT_OK", "command", "emit_json", "port_arg",
    "table",
]


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


def port_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--port P``: only sockets whose local or remote port is P."""
    p.add_argument("--port", type=int, metavar="P",
                   help="only sockets whose local or remote port is P")
