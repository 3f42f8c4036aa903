"""What every subcommand shares: registration, exit codes, tables, JSON, common arguments."""

from __future__ import annotations

import argparse
import errno
import io
import json
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .._format import for_json, printable

__all__ = [
    "COMMANDS", "EXIT_ERROR", "EXIT_FOUND", "EXIT_OK", "EXIT_STATUS", "Output", "UsageError",
    "checked", "command", "emit_json", "port_arg", "table",
]


EXIT_OK = 0
EXIT_FOUND = 1
EXIT_ERROR = 2

#: The rule every command follows, printed under each --help (a command may say more).
EXIT_RULE = "Exit status: 0 nothing found, 1 problems found, 2 error (bad usage included)."

#: Per command, what its exit status means when it says more than EXIT_RULE.
EXIT_STATUS: dict[str, str] = {}

#: Each subcommand registers (name, help, add_arguments, run) here.
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace, TextIO], int]]
COMMANDS: list[Command] = []


class UsageError(Exception):
    """A mistake in the command line, said in the command line's words; exit status 2."""


def command(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
    exit_status: str | None = None,
) -> Callable[[Callable[[argparse.Namespace, TextIO], int]],
              Callable[[argparse.Namespace, TextIO], int]]:
    """Register ``run(args, out) -> exit status`` as the subcommand ``name``.

    ``exit_status`` replaces EXIT_RULE under the command's --help where it means more.
    """

    def register(
        run: Callable[[argparse.Namespace, TextIO], int],
    ) -> Callable[[argparse.Namespace, TextIO], int]:
        COMMANDS.append((name, help, add_arguments, run))
        if exit_status is not None:
            EXIT_STATUS[name] = exit_status
        return run

    return register


class Output(io.TextIOBase):
    """The command's stdout: a write that fails never replaces the exit status decided.

    A reader that went away (``pysockopt diagnose | head -1``, ``| true``) is a broken pipe:
    the rest of the output is dropped quietly and the command still returns its own status.
    Any other failure (stdout closed, disk full) is kept in ``error`` for main() to report
    as exit status 2.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._stream = stream
        self.broken = False
        self.error: OSError | None = None if stream is not None else OSError(
            errno.EBADF, "standard output is closed")

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        """Whether the stream underneath is a terminal (``pysockopt watch`` draws on one)."""
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        """Return the stream's descriptor (for the terminal's size)."""
        if self._stream is None:
            raise OSError(errno.EBADF, "standard output is closed")
        return self._stream.fileno()

    def write(self, text: str) -> int:
        """Write ``text``, or drop it once the output has failed."""
        if self._stream is not None and not self.broken and self.error is None:
            try:
                self._stream.write(text)
            except OSError as err:
                self._failed(err)
        return len(text)

    def flush(self) -> None:
        """Flush the stream; a failure is remembered, not raised."""
        if self._stream is not None and not self.broken and self.error is None:
            try:
                self._stream.flush()
            except OSError as err:
                self._failed(err)

    def _failed(self, err: OSError) -> None:
        if isinstance(err, BrokenPipeError):
            self.broken = True
        else:
            self.error = err


def emit_json(out: TextIO, data: Any) -> None:
    """Write ``data`` as indented JSON and a newline, every string as ``escape`` writes it."""
    json.dump(for_json(data), out, indent=2, sort_keys=False)
    out.write("\n")


def table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write an aligned plain-text table (numbers right-aligned), like ``ss`` and ``netstat``.

    Cells are made printable first: a control character never reaches the terminal.
    """
    cells = [[printable(str(c)) for c in header]] + [
        ["-" if c is None else printable(str(c)) for c in r] for r in rows]
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


def checked(convert: Callable[[str], Any], *, append: bool = False) -> type[argparse.Action]:
    """Return an argparse action that stores ``convert(text)`` (appends it with ``append``).

    ``convert`` raises ValueError with what is wrong, and the command line says it in its own
    words: ``--port 70000: must be 0..65535`` (exit status 2, with the usage line).
    """

    class Checked(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            text = str(values)
            try:
                value = convert(text)
            except ValueError as err:
                parser.error(f"{option_string or self.metavar} {printable(text)}: {err}")
            if append:
                value = [*(getattr(namespace, self.dest, None) or []), value]
            setattr(namespace, self.dest, value)

    return Checked


def number(text: str, kind: Callable[[str], Any] = int) -> Any:
    """``" 104 "`` -> 104; ValueError("not a number") otherwise."""
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError("not a number") from None


def _port(text: str) -> int:
    value: int = number(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be 0..65535")
    return value


def port_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--port P``: only sockets whose local or remote port is P."""
    p.add_argument("--port", action=checked(_port), metavar="P",
                   help="only sockets whose local or remote port is P (0..65535)")
