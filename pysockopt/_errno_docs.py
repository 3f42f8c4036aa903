"""Generate the reference sections of docs/errno.md from pysockopt.errno's own table.

``python -m pysockopt._errno_docs [PATH]`` rewrites the generated sections of PATH (default
docs/errno.md) in place; ``--check`` only reports (exit 1) when the page is stale. The text
between each ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->`` pair is
replaced; everything else on the page is written by hand.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Callable, Sequence

from .errno import ErrnoInfo, ErrorCategory, errno_table

__all__ = ["main", "render"]

_SECTION = re.compile(
    r"(<!-- BEGIN GENERATED (?P<name>[a-z-]+)[^>]*-->\n)(?P<body>.*?)(<!-- END GENERATED "
    r"(?P=name) -->)",
    re.DOTALL,
)

_HOW_TO_RETRY = {
    ErrorCategory.WOULD_BLOCK: "when the socket is readable/writable",
    ErrorCategory.INTERRUPTED: "at once, with the time left of your timeout",
    ErrorCategory.IN_PROGRESS: "not connect() again: wait until writable, read SO_ERROR",
    ErrorCategory.RESOURCE: "after a short back-off",
}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _socket_errnos() -> list[ErrnoInfo]:
    return [i for i in errno_table() if i.category is not ErrorCategory.OTHER]


def _names(info: ErrnoInfo) -> str:
    return " / ".join(f"`{n}`" for n in info.names)


def _platform_note() -> str:
    libc = platform.libc_ver()[0] or "unknown libc"
    return (f"*Numbers and messages as on {platform.system()} ({libc}), where this section was "
            "generated; `pysockopt errno --list` shows your platform's.*\n\n")


def _categories() -> str:
    rows = []
    for category in ErrorCategory:
        members = sorted(i.name for i in _socket_errnos() if i.category is category)
        if category is ErrorCategory.OTHER:
            members = ["every errno not listed elsewhere"]
        elif not members:
            members = ["(exceptions only, see triage)"]
        rows.append((f"`{category.value}`", category.description, ", ".join(members)))
    return _table(["category", "what it means", "errnos"], rows)


def _retryable() -> str:
    rows = [(_names(i), i.code, f"`{i.category.value}`", _HOW_TO_RETRY[i.category])
            for i in errno_table() if i.retryable]
    return _platform_note() + _table(["errno", "number", "category", "call again"], rows)


def _summary() -> str:
    rows = [(_names(i), i.code, f"`{i.category.value}`", "yes" if i.retryable else "no",
             i.action.value, i.message) for i in _socket_errnos()]
    text = _platform_note() + _table(
        ["errno", "number", "category", "retryable", "action", "message"], rows)
    for info in _socket_errnos():
        text += (f"\n### {info.name} ({info.code})\n\n"
                 f"{info.message}. Category `{info.category.value}`, "
                 f"{'retryable' if info.retryable else 'not retryable'}, action "
                 f"`{info.action.value}`"
                 + (f"; also named {', '.join(f'`{a}`' for a in info.aliases)}"
                    if info.aliases else "") + ".\n\n"
                 f"{info.meaning}\n\n**What to do:** {info.advice}\n")
    return text


def _all() -> str:
    rows = [(i.code, f"`{i.name}`", " ".join(f"`{a}`" for a in i.aliases) or "",
             f"`{i.category.value}`", i.message) for i in errno_table()]
    return _platform_note() + _table(["number", "name", "aliases", "category", "message"], rows)


_GENERATORS: dict[str, Callable[[], str]] = {
    "categories": _categories,
    "retryable": _retryable,
    "reference": _summary,
    "all": _all,
}


def render(page: str) -> str:
    """Return ``page`` with every generated section rebuilt from the code's table."""

    def replace(match: re.Match[str]) -> str:
        generate = _GENERATORS.get(match["name"])
        if generate is None:
            raise ValueError(f"unknown generated section {match['name']!r}")
        return match.group(1) + "\n" + generate() + "\n" + match.group(4)

    return _SECTION.sub(replace, page)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with --check, verify) the page; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"] or ["docs/errno.md"]
    stale = False
    for path in paths:
        with open(path, encoding="utf-8") as f:
            page = f.read()
        fresh = render(page)
        if fresh == page:
            continue
        stale = True
        if check:
            sys.stderr.write(f"{path} is stale: run python -m pysockopt._errno_docs {path}\n")
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(fresh)
    return 1 if stale and check else 0


if __name__ == "__main__":
    raise SystemExit(main())
