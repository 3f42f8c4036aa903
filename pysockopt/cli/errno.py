"""``pysockopt errno``: errno values explained in socket terms."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .._format import printable
from ._common import (
    EXIT_ERROR,
    EXIT_FOUND,
    EXIT_OK,
    UsageError,
    command,
    emit_json,
    table,
)

_EXIT_STATUS = ("Exit status: 0 every ERRNO is known, --search matched, or --list; 1 --search "
                "matched nothing (like grep); 2 an ERRNO this platform does not define (a "
                "number or a name: said on stderr, as errors are), or a usage error.")


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
         _errno_args, _EXIT_STATUS)
def _errno(args: argparse.Namespace, out: TextIO) -> int:
    from ..errno import UnknownErrnoName, errno_info, errno_search, errno_table

    if args.query and (args.search is not None or args.list):
        raise UsageError("give ERRNO values, or --search, or --list")
    if args.search is not None and not args.search.split():
        raise UsageError(f"--search {args.search!r}: give at least one word to look for")
    if args.search is not None or args.list:
        infos = errno_table() if args.list else errno_search(args.search)
        if args.json:
            emit_json(out, [i.as_dict() for i in infos])
        elif infos:
            table(out, ["code", "name", "aliases", "category", "message"], _errno_rows(infos))
        else:
            out.write(printable(f"no errno matches '{args.search.strip()}'") + "\n")
        return EXIT_OK if infos or args.list else EXIT_FOUND
    if not args.query:
        raise UsageError("give an errno number or name, --search TEXT or --list")
    status = EXIT_OK
    results: list[dict[str, object]] = []
    shown = 0
    for query in args.query:
        text = query.strip()
        try:
            info = errno_info(int(text) if text.lstrip("-").isdigit() else text)
        except UnknownErrnoName as err:
            hint = ""
            if len(text.split()) > 1 or not err.suggestions:
                hint = f"; to look for words, try: pysockopt errno --search {shlex.quote(text)}"
            sys.stderr.write(printable(f"pysockopt errno: {err}{hint}") + "\n")
            results.append({"query": query, "known": False, "error": str(err),
                            "suggestions": list(err.suggestions)})
            status = EXIT_ERROR
            continue
        results.append(info.as_dict())
        if not info.known:
            # The same rule as an unknown name: an error on stderr, nothing on stdout but
            # the --json record.
            sys.stderr.write(printable(f"pysockopt errno: {info.meaning} {info.advice}") + "\n")
            status = EXIT_ERROR
            continue
        if not args.json:
            if shown:
                out.write("\n")
            _errno_detail(out, info)
            shown += 1
    if args.json:
        emit_json(out, results[0] if len(results) == 1 else results)
    return status
