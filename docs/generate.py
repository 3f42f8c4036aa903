"""Regenerate the generated sections of docs/*.md from the code's own tables.

    python docs/generate.py            rewrite every stale section in place
    python docs/generate.py --check    only report: exit 1 when a page is stale

A page marks each generated section with one convention::

    <!-- BEGIN GENERATED name (python docs/generate.py; do not edit) -->
    ...
    <!-- END GENERATED name -->

and everything outside the markers is written by hand. ``GENERATORS`` maps each name to the
function that writes it: errno-* from pysockopt.errno's table, tcpinfo-fields from
TCP_INFO_FIELDS, diagnose-rules from the diagnosis RULES and the Thresholds defaults,
sample-counters from the counter tables a Sample reads (pysockopt._host),
netns-cgroup-patterns from CGROUP_PATTERNS,
prometheus-metrics from pysockopt.prometheus.METRICS. Paths are
relative to this file, never to the working directory. tests/test_docs.py fails when a page is
stale. Nothing here ships in the wheel.
"""

from __future__ import annotations

import pathlib
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields

# Document the tree this script sits in, not whatever pysockopt the interpreter would import
# (an installed copy, or another checkout's editable install).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from pysockopt import _host
from pysockopt.errno import ErrnoInfo, ErrorCategory, errno_table
from pysockopt.host.model import Thresholds
from pysockopt.host.namespaces import CGROUP_PATTERNS, container_from_cgroup
from pysockopt.host.rules import RULES
from pysockopt.host.sample import GAUGES
from pysockopt.prometheus import METRICS
from pysockopt.tcpinfo import TCP_INFO_FIELDS, TCP_INFO_KNOWN_SIZE, TcpInfoField

DOCS = pathlib.Path(__file__).resolve().parent

SECTION = re.compile(
    r"(?P<begin><!-- BEGIN GENERATED (?P<name>[a-z-]+)[^>]*-->\n)(?P<body>.*?)"
    r"(?P<end><!-- END GENERATED (?P=name) -->)",
    re.DOTALL,
)


# --- docs/errno.md

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


# --- docs/tcpinfo.md

_UNITS = {
    "us": "µs",
    "ms": "ms",  # a duration: the meaning says since when (last_*) or of what (a total)
    "bytes": "bytes",
    "bytes/s": "bytes/s",
    "segments": "segments",
    "packets": "packets",
    "count": "count",
    "flags": "bit flags",
    "enum": "code",
    "shift": "shift",
    "bool": "0/1",
    "state": "TcpState",
}


def _where(f: TcpInfoField) -> str:
    if f.bits is None:
        return str(f.offset)
    first, width = f.bits
    bits = f"bit {first}" if width == 1 else f"bits {first}-{first + width - 1}"
    return f"{f.offset} ({bits})"


def _kernel(f: TcpInfoField) -> str:
    return f"{f.kernel} to {f.until}" if f.until else f.kernel


def _release(version: str) -> tuple[int, ...]:
    """``"4.10"`` -> ``(4, 10)``: kernel versions in release order, not string order."""
    return tuple(int(part) for part in version.split("."))


def _tcpinfo_fields() -> str:
    """Return the Markdown field table, one row per field of every known layout."""
    rows = [
        "| field | offset | type | unit | kernel | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in TCP_INFO_FIELDS:
        meaning = f.meaning.replace("|", "\\|")
        if f.until:
            meaning += f" (from {f.until} these bytes are laid out differently, see below)"
        rows.append(f"| `{f.name}` | {_where(f)} | `{f.ctype}` | {_UNITS[f.unit]} "
                    f"| {_kernel(f)} | {meaning} |")
    # The struct only grows: after each kernel it is as long as the furthest field that kernel
    # or an earlier one added. A kernel that only filled spare bits (5.5 in byte 7) or re-laid
    # out bytes already there (7.0) did not change the length: no step of its own.
    growth_steps: list[str] = []
    size = 0
    for kernel in sorted({f.kernel for f in TCP_INFO_FIELDS}, key=_release):
        end = max(f.end for f in TCP_INFO_FIELDS if _release(f.kernel) <= _release(kernel))
        if end > size:
            size = end
            growth_steps.append(f"{kernel}: {size}")
    growth = ", ".join(growth_steps)
    return (
        "\n".join(rows)
        + f"\n\nBytes returned by kernel version (struct size after each step): {growth}. "
        f"The table covers {TCP_INFO_KNOWN_SIZE} bytes; more land in `TcpInfo.extra`.\n"
    )


# --- docs/diagnose.md


def _diagnose_rules() -> str:
    """Return the rule table, one section per rule, and the thresholds."""
    defaults = Thresholds()
    out = [
        "| code | severity | looks for | threshold (default) | needs | reads one by one |",
        "|---|---|---|---|---|---|",
    ]
    for r in RULES:
        limit = ("-" if r.threshold is None
                 else f"`{r.threshold}` = {getattr(defaults, r.threshold)}")
        needs = "an interval" if r.interval else "a snapshot"
        reads = ("the closes of the interval (the closed-connection log)" if r.closes
                 else "; ".join(p.describe() for p in r.picks) or "counters and sysctls only")
        out.append(f"| `{r.code}` | {r.severity.label} | {r.title} | {limit} | {needs} "
                   f"| {reads} |")
    for r in RULES:
        out += ["", f"## {r.code}: {r.title}", "",
                f"**Looks for.** {r.looks_for}", "",
                f"**What it usually means.** {r.meaning}", "",
                f"**What to do.** {r.advice}"]
    out += ["", "## Thresholds", "",
            "Pass `pysockopt.diagnose(thresholds=Thresholds(close_wait=50, ...))` to tune them.",
            "", "| field | default |", "|---|---|"]
    for f in fields(defaults):
        out.append(f"| `{f.name}` | {getattr(defaults, f.name)} |")
    return "\n".join(out).strip("\n") + "\n"


# --- docs/namespaces.md


def _cgroup_patterns() -> str:
    """Return the table of cgroup path formats, in the order they are tried."""
    rows = []
    for i, p in enumerate(CGROUP_PATTERNS, 1):
        c = container_from_cgroup(p.example)
        parsed = "" if c is None else (
            f"id `{c.short_id}`" + (f", pod `{c.pod_uid}`" if c.pod_uid else "")
            + (f", name `{c.name}`" if c.name else ""))
        shown = p.example
        if c is not None and c.short_id != c.id:
            shown = shown.replace(c.id, "<64 hex>")
        rows.append((i, f"`{p.runtime}`", f"`{shown}`", parsed))
    return ("Ids shown as `<64 hex>` are 64 hex digits in real paths.\n\n"
            + _table(["#", "runtime", "example path", "gives"], rows))


# --- docs/watch.md


def _sample_counters() -> str:
    """Return the table of the host counters a Sample reads, their kind and their scope."""
    rows: list[tuple[str, str, str, str]] = []
    for table, path, names in (("TcpExt", "/proc/net/netstat", _host.TCP_EXT_FIELDS),
                               ("Tcp", "/proc/net/snmp", _host.SNMP_TCP_FIELDS)):
        for name in names:
            key = f"{table}.{name}"
            rows.append((f"`{key}`", path, "gauge" if key in GAUGES else "counter",
                         "per namespace"))
    for name in _host.SOCKSTAT_FIELDS:
        rows.append((f"`sockstat.{name}`", "/proc/net/sockstat TCP", "gauge",
                     "host-wide" if name in _host.SOCKSTAT_HOST_WIDE else "per namespace"))
    for name, scope in _host.COUNTER_SYSCTLS.items():
        kind = ("gauge" if name.endswith("_count")
                else "setting" if name in _host.FACT_SYSCTLS else "limit")
        rows.append((f"`{name}`", "/proc/sys", kind,
                     scope))
    return _table(["name", "read from", "kind", "scope"], rows)


# --- docs/prometheus.md


def _prometheus_metrics() -> str:
    """Return the table of every metric the collector exports (pysockopt.prometheus.METRICS)."""
    out = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join([f"`{x}`" for x in m.labels]
                           + [f"`{x}` (with --ports)" for x in m.optional]) or "-"
        meaning = m.help + (f" {m.when}" if m.when else "")
        out.append(f"| `{m.name}` | {m.type} | {labels} | {_cell(meaning)} |")
    return "\n".join(out) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "errno-categories": _categories,
    "errno-retryable": _retryable,
    "errno-reference": _summary,
    "errno-all": _all,
    "tcpinfo-fields": _tcpinfo_fields,
    "diagnose-rules": _diagnose_rules,
    "netns-cgroup-patterns": _cgroup_patterns,
    "sample-counters": _sample_counters,
    "prometheus-metrics": _prometheus_metrics,
}


def render(page: str) -> str:
    """Return ``page`` with every generated section rebuilt; unknown names are an error."""

    def replace(match: re.Match[str]) -> str:
        generate = GENERATORS.get(match["name"])
        if generate is None:
            raise ValueError(f"unknown generated section {match['name']!r}")
        return match["begin"] + "\n" + generate().strip("\n") + "\n\n" + match["end"]

    return SECTION.sub(replace, page)


def pages() -> list[pathlib.Path]:
    """Return the docs pages that hold generated sections."""
    return [p for p in sorted(DOCS.glob("*.md")) if SECTION.search(p.read_text("utf-8"))]


def stale() -> list[pathlib.Path]:
    """Return the pages whose generated sections differ from what the code says now."""
    return [p for p in pages() if render(p.read_text("utf-8")) != p.read_text("utf-8")]


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` only list) the stale pages; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in ([], ["--check"]):
        sys.stderr.write("usage: python docs/generate.py [--check]\n")
        return 2
    old = stale()
    for path in old:
        if args:
            sys.stderr.write(f"{path.name} is stale: run python docs/generate.py\n")
        else:
            path.write_text(render(path.read_text("utf-8")), encoding="utf-8")
            sys.stdout.write(f"rewrote {path.name}\n")
    return 1 if old and args else 0


if __name__ == "__main__":
    sys.exit(main())
