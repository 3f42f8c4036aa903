"""``pysockopt errno``: errno values explained in socket terms."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._common import EXIT_ERROR, EXIT_FOUND, EXIT_OK, command, emit_json, table

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
    from ..errno import UnknownErrnoName, errno_info, errno_search, errno_table

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
