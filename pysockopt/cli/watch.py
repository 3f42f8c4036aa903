"""``pysockopt watch``: the host's TCP sockets over time, like top (or NDJSON for machines).

Every ``--interval`` seconds one ``diagnose(earlier=previous sample)``: the counts, the
listeners, the host counters, and every rule, the ones that need two samples included. On a
terminal the screen is redrawn in place (no scrolling, no flicker: one write per frame, each
line overwritten and cleared to its end); elsewhere, or with ``--json``, one JSON object per
sample per line, flushed as it is written. A closed-connection log runs alongside: the closes
between two samples (per second, short-lived ones, those with unacknowledged data, per port
and owner) are in the view and under ``closed`` in the NDJSON. Ctrl-C ends it; the exit status
is 1 when any finding worse than INFO was seen, else 0.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

from .._format import for_json, printable
from ..host.closed import CloseFeed, CloseTotals
from ..host.model import Diagnosis, Finding, Severity
from ..host.namespaces import NetNamespace
from ..host.owners import OwnerCache
from ..host.sample import Rates, Sample
from ..tcpinfo import TcpState
from ._common import EXIT_ERROR, EXIT_FOUND, EXIT_OK, command, port_arg
from .diagnose import sampled, seconds
from .netns import add_netns_args, netns_value

__all__ = ["Screen", "View", "frame", "sparkline"]

#: The eight block heights of a sparkline, lowest first.
BARS: Final = "▁▂▃▄▅▆▇█"
#: Samples a sparkline remembers.
HISTORY: Final = 40


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=seconds, default=1.0, metavar="S",
                   help="seconds between samples (default 1)")
    p.add_argument("--count", type=_positive, metavar="N", help="stop after N samples")
    port_arg(p)
    add_netns_args(p)
    p.add_argument("--json", action="store_true",
                   help="one JSON object per sample per line (the default when not a terminal)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


@command("watch", "the host's TCP sockets live, like top: counts, rates, listeners, "
         "CLOSE_WAIT owners, findings as they appear", _watch_args)
def _watch(args: argparse.Namespace, out: TextIO) -> int:
    from ..host.namespaces import resolve

    live = not args.json and out.isatty()
    if args.all_netns:
        if live:
            sys.stderr.write("pysockopt watch: --all-netns writes one JSON line per namespace "
                             "and sample: add --json (or pipe it)\n")
            return EXIT_ERROR
        return _watch_all(args, out)
    # Resolved once: a name or pid is looked up in a census of the host, not per sample.
    netns = None if args.netns is None else resolve(netns_value(args.netns))
    view = View(args.interval, args.port, None if netns is None else f"netns {netns.label}")
    screen = Screen(out) if live else None
    previous: Sample | None = None
    taken = 0
    start = time.monotonic()
    last: list[str] = []
    old_term = signal.getsignal(signal.SIGTERM)
    # The closed-connection log rides on the samples' looks (subscribed on the first one's
    # way in); the owners the looks found stay known one look more, to name closed sockets.
    owners = OwnerCache()
    feed = CloseFeed(port=args.port, owners=owners)
    said: set[str] = set()
    try:
        if screen is not None:
            # `kill PID` ends it as Ctrl-C does: the terminal is given back as it was.
            signal.signal(signal.SIGTERM, _interrupt)
            screen.open()
        while args.count is None or taken < args.count:
            if taken:
                # On a fixed beat; a slow sample skips beats rather than drifting.
                beat = args.interval
                delay = beat - (time.monotonic() - start) % beat
                feed.wait(delay)  # reading the closes meanwhile
            owners.new_look()
            d, view.closed = sampled(args.port, previous, netns, feed, owners)
            taken += 1
            assert d.sample is not None
            rates = None if previous is None else d.sample.rates(previous)
            view.update(d, rates)
            _say_once(feed, said)
            if screen is not None:
                width, height = screen.size()
                last = frame(view, width, height)
                screen.draw(last)
            else:
                out.write(json.dumps(for_json(record(d, rates, view))) + "\n")
                out.flush()
                if _gone(out):  # `pysockopt watch | head -3`: the reader has what it wanted
                    break
            previous = d.sample
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()
        if screen is not None:
            screen.close()
            signal.signal(signal.SIGTERM, old_term)
    if screen is not None:
        # The alternate screen is gone: leave the last frame and the problems seen behind.
        for line in last + (view.summary_lines() if view.seen_problems else []):
            out.write(line + "\n")
    return EXIT_FOUND if view.seen_problems else EXIT_OK


def _gone(out: TextIO) -> bool:
    """Whether the output failed (a reader that went away, a full disk): nobody reads on."""
    return bool(getattr(out, "broken", False) or getattr(out, "error", None))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say_once(feed: CloseFeed, said: set[str]) -> None:
    """Say on stderr, once each, why a namespace has no closed-connection log."""
    for message in feed.errors.values():
        if message not in said:
            said.add(message)
            sys.stderr.write(f"pysockopt watch: {message}\n")


def _diagnose_in(port: int | None, previous: dict[int, Sample], feed: CloseFeed,
                 ns: NetNamespace) -> tuple[Diagnosis, CloseTotals | None]:
    return sampled(port, previous.get(ns.inode), ns, feed)


def _watch_all(args: argparse.Namespace, out: TextIO) -> int:
    """--all-netns: every sample, one NDJSON line per namespace (with its ``netns``)."""
    from ..host.namespaces import for_each_netns
    from ..host.owners import shared_owners

    previous: dict[int, Sample] = {}
    views: dict[int, View] = {}
    taken = 0
    start = time.monotonic()
    feed = CloseFeed(port=args.port)  # a subscriber per namespace, made by its first look
    said: set[str] = set()
    try:
        while args.count is None or taken < args.count:
            if taken:
                feed.wait(args.interval - (time.monotonic() - start) % args.interval)
            with shared_owners():  # one walk of /proc/*/fd per sample, for every namespace
                found = for_each_netns(functools.partial(_diagnose_in, args.port, previous,
                                                         feed))
            feed.keep(ns.inode for ns, _ in found.results)  # vanished ones are dropped
            _say_once(feed, said)
            taken += 1
            seen = {}
            for ns, (d, closed) in found.results:
                assert d.sample is not None
                before = previous.get(ns.inode)
                rates = None if before is None else d.sample.rates(before)
                view = views.setdefault(ns.inode, View(args.interval, args.port,
                                                      f"netns {ns.label}"))
                view.update(d, rates)
                view.closed = closed
                out.write(json.dumps(for_json({"netns": ns.as_dict(), **record(d, rates, view)}))
                          + "\n")
                seen[ns.inode] = d.sample
            for skipped in found.skipped:
                out.write(json.dumps(for_json({"netns": skipped.netns.as_dict(),
                                               "skipped": skipped.as_dict()})) + "\n")
            out.flush()
            if _gone(out):
                break
            previous = seen  # a namespace that went away is forgotten
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()
    return EXIT_FOUND if any(v.seen_problems for v in views.values()) else EXIT_OK


# --- the closes between two samples


def closed_record(t: CloseTotals, seconds: float | None) -> dict[str, object]:
    """Return the closes of one interval as the NDJSON's ``closed`` object."""
    return {
        "closes": t.closes,
        "per_second": None if not seconds else round(t.closes / seconds, 2),
        "by_port_verdict": [{"port": p, "verdict": v, "closes": n}
                            for (p, v), n in sorted(t.by_port_verdict.items())],
        "short_lived": [{"remote_address": r, "owner": o, "closes": n}
                        for (r, o), n in sorted(t.short_lived.items(), key=lambda kv: -kv[1])],
        "unacked": [{"port": p, "owner": o, "closes": n}
                    for (p, o), n in sorted(t.unacked_by_port_owner.items(),
                                            key=lambda kv: -kv[1])],
        "gave_up": [{"remote_address": r, "closes": n}
                    for r, n in sorted(t.gave_up_by_remote.items(), key=lambda kv: -kv[1])],
        "bytes_acked": t.bytes_acked, "bytes_received": t.bytes_received,
        "retransmits": t.retransmits, "lost": t.lost,
    }


# --- what the view remembers between samples


_NUMBERS: Final = re.compile(r"\d[\d.,]*")


def finding_key(f: Finding) -> tuple[str, int | None, str]:
    """Identify a finding across samples: its code, port and summary without its numbers."""
    return (f.code, f.port, _NUMBERS.sub("#", f.summary))


@dataclass
class Seen:
    """A finding as last seen, and when it first appeared (wall clock)."""

    first: float
    finding: Finding


@dataclass
class View:
    """Everything the live view and the NDJSON lines show, updated once per sample."""

    interval: float
    port: int | None
    netns: str | None = None
    samples: int = 0
    diagnosis: Diagnosis | None = None
    rates: Rates | None = None
    history: dict[TcpState, collections.deque[int]] = field(default_factory=dict)
    findings: dict[tuple[str, int | None, str], Seen] = field(default_factory=dict)
    problems: dict[tuple[str, int | None, str], Seen] = field(default_factory=dict)
    closed: CloseTotals | None = None

    @property
    def seen_problems(self) -> bool:
        """Whether any finding worse than INFO was seen since the start."""
        return bool(self.problems)

    def update(self, d: Diagnosis, rates: Rates | None) -> None:
        """Take in one sample's diagnosis and the rates since the previous sample."""
        assert d.sample is not None
        self.samples += 1
        self.diagnosis, self.rates = d, rates
        for state in set(self.history) | set(d.sample.counts):
            h = self.history.get(state)
            if h is None:  # none in this state until now
                h = self.history[state] = collections.deque(
                    [0] * min(self.samples - 1, HISTORY - 1), maxlen=HISTORY)
            h.append(d.sample.counts.get(state, 0))
        now = d.sample.wall
        current = {}
        for f in d.findings:
            key = finding_key(f)
            old = self.findings.get(key)
            current[key] = Seen(old.first if old else now, f)
            if f.severity >= Severity.WARNING:
                first = self.problems[key].first if key in self.problems else now
                self.problems[key] = Seen(first, f)
        self.findings = current

    def summary_lines(self) -> list[str]:
        """Return what to leave on the terminal after the live view: the problems seen."""
        lines = [f"pysockopt watch: {len(self.problems)} problem(s) seen in "
                 f"{self.samples} samples"]
        for s in sorted(self.problems.values(), key=lambda s: s.first):
            f = s.finding
            lines.append(printable(f"  {_clock(s.first)} {f.severity.label.upper()} "
                                   f"{f.code}: {f.summary}"))
        return lines


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


# --- NDJSON


def record(d: Diagnosis, rates: Rates | None, view: View) -> dict[str, object]:
    """Return one sample as one JSON object (a line of ``pysockopt watch --json``)."""
    s = d.sample
    assert s is not None
    data = s.as_dict()
    data["interval"] = None if rates is None else round(rates.seconds, 3)
    data["rates"] = None if rates is None else rates.as_dict()
    data["findings"] = [dict(f.as_dict(), first_seen=view.findings[finding_key(f)].first)
                        for f in d.findings]
    data["ok"] = d.ok
    data["closed"] = None if view.closed is None else closed_record(
        view.closed, None if rates is None else rates.seconds)
    return data


# --- the live view


def sparkline(values: Sequence[int], width: int) -> str:
    """Return the last ``width`` values as block characters, lowest to highest ▁..█."""
    values = list(values)[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return BARS[0] * len(values)
    span = high - low
    return "".join(BARS[min(7, (v - low) * 8 // span)] for v in values)


def _signed(value: float, digits: int = 0) -> str:
    if digits:
        return f"{value:+.{digits}f}"
    return f"{value:+,.0f}"


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[:max(0, width - 1)] + "…"


def frame(view: View, width: int, height: int) -> list[str]:
    """Return the screen as lines, each at most ``width`` long, at most ``height`` of them.

    Sections, top to bottom: a title; per-state counts (with delta, rate and a sparkline of
    each state that changed); a line of host counters; the listeners with the fullest
    queue or the most drops; the largest CLOSE_WAIT owners; the findings, newest first,
    each with the time it appeared. Narrow terminals lose the sparklines, then the rates;
    short ones lose rows from the bottom sections first, never the title or the findings'
    heading.
    """
    d, r = view.diagnosis, view.rates
    if d is None or d.sample is None or width < 10 or height < 1:
        return []
    s = d.sample
    scope = "all ports" if view.port is None else f"port {view.port}"
    if view.netns is not None:
        scope += f"  {view.netns}"
    measured = "first sample" if r is None else f"rates over {r.seconds:.1f} s"
    title = printable(f"pysockopt watch  {scope}  every {view.interval:g} s  {measured}  "
                      f"{_clock(s.wall)}  #{view.samples}")

    # States: the ones with sockets now, or that had some in the history.
    states = [st for st in sorted(view.history, key=lambda st: -max(view.history[st]))
              if max(view.history[st]) > 0]
    show_rate = width >= 44
    spark_width = min(HISTORY, width - 44) if width >= 56 else 0
    state_rows = []
    for st in states:
        n = s.counts.get(st, 0)
        row = f"{st.label:<12}{n:>8,}"
        change = None if r is None else r.states.get(st)
        if change is not None and change.delta:
            row += f"{_signed(change.delta):>8}"
            if show_rate:
                row += f"{_signed(change.per_second, 1):>9}/s"
        elif r is not None:
            row += f"{'0':>8}" + (f"{'':>11}" if show_rate else "")
        hist = view.history[st]
        if spark_width and len(set(hist)) > 1:
            row = f"{row:<44}" + sparkline(hist, spark_width)
        state_rows.append(row)
    head = f"{'STATE':<12}{'COUNT':>8}" + (f"{'DELTA':>8}" if r is not None else "")
    if show_rate and r is not None:
        head += f"{'RATE':>11}"
    if spark_width:
        head = f"{head:<44}HISTORY"

    counters = _counter_line(s, r)
    listeners = _listener_rows(s, r)
    owners = _owner_rows(s, r)
    closed = _closed_rows(view.closed, None if r is None else r.seconds)
    findings = sorted(view.findings.values(), key=lambda x: (-x.finding.severity, -x.first))
    finding_rows = [printable(f"{_clock(x.first)} {x.finding.severity.label.upper():8} "
                              f"{x.finding.code}: {x.finding.summary}") for x in findings]
    if not finding_rows:
        finding_rows = ["(none)"]

    # Lay out: the title, then sections while room is left; the findings keep up to a
    # quarter of the screen (at least heading + one line) and get whatever remains.
    sections: list[tuple[str, list[str]]] = [
        (head, state_rows),
        ("", [counters]),
        (f"{'LISTENER':<28}{'QUEUE':>12}{'DROPS':>10}{'DROPS/S':>10}", listeners),
        (f"{'CLOSE_WAIT OWNER':<40}{'COUNT':>8}{'GROWTH':>12}", owners),
        ("", closed),
    ]
    lines = [title]
    budget = height - 1 - min(len(finding_rows) + 1, max(2, height // 4))
    for heading, rows in sections:
        if not rows or budget <= 0:
            continue
        block = ([heading] if heading else []) + rows
        take = block[:budget]
        if heading and len(take) == 1:  # a heading alone says nothing
            break
        lines += take
        budget -= len(take)
    room = height - len(lines)
    if room >= 2:
        lines.append(f"FINDINGS ({len(view.problems)} problem(s) seen)")
        lines += finding_rows[:room - 1]
    return [_fit(line, width) for line in lines[:height]]


def _counter_line(s: Sample, r: Rates | None) -> str:
    c = s.counters
    parts = []
    tw, orphans = c.sockstat.get("tw"), c.sockstat.get("orphan")
    if tw is not None:
        parts.append(f"tw {tw:,}")
    if orphans is not None:
        parts.append(f"orphans {orphans:,}")
    if c.conntrack_count is not None:
        parts.append(f"conntrack {c.conntrack_count:,}"
                     + (f"/{c.conntrack_max:,}" if c.conntrack_max else ""))
    if r is not None:
        for label, name in (("drops", "TcpExt.ListenDrops"), ("retrans", "Tcp.RetransSegs"),
                            ("opens", "Tcp.ActiveOpens"), ("resets", "Tcp.EstabResets"),
                            ("cookies", "TcpExt.SyncookiesSent")):
            change = r.counter(name)
            if change is not None:
                parts.append(f"{label} {change.per_second:,.1f}/s")
    return "host: " + "  ".join(parts)


def _listener_rows(s: Sample, r: Rates | None, most: int = 5) -> list[str]:
    per_second = {} if r is None else {d.listener.inode: d for d in r.listeners}
    rows = []
    for c in s.listeners:
        d = per_second.get(c.inode)
        fill = (c.rqueue / c.backlog) if c.backlog else (1.0 if c.rqueue else 0.0)
        rate = d.per_second if d is not None else 0.0
        rows.append((fill, rate, c, d))
    rows.sort(key=lambda x: (-x[0], -x[1], -(x[2].drops or 0)))
    out = []
    for fill, rate, c, d in rows[:most]:
        if not fill and not rate and not c.drops:
            continue
        queue = f"{c.rqueue}/{c.backlog if c.backlog is not None else '?'}"
        out.append(f"{printable(c.local):<28}{queue:>12}"
                   f"{c.drops if c.drops is not None else '-':>10}"
                   f"{(f'{rate:.1f}' if d is not None else '-'):>10}")
    return out


def _owner_rows(s: Sample, r: Rates | None, most: int = 3) -> list[str]:
    if s.close_wait is None or not s.close_wait:
        return []
    listening = {c.local_port for c in s.listeners}
    counts: collections.Counter[tuple[int, int | None, str | None]] = collections.Counter()
    for c in s.close_wait:
        if c.local_port in listening:
            counts[(c.uid, c.local_port, None)] += 1
        else:
            counts[(c.uid, None, c.remote)] += 1
    growth = {} if r is None else {(g.uid, g.port, g.remote): g for g in r.close_wait}
    out = []
    for (uid, port, remote), n in counts.most_common(most):
        who = f"uid {uid} " + (f"port {port}" if port is not None else f"-> {remote}")
        g = growth.get((uid, port, remote))
        grew = "" if g is None else f"{_signed(g.per_second, 1)}/s"
        out.append(f"{printable(who):<40}{n:>8,}{grew:>12}")
    return out


def _closed_rows(t: CloseTotals | None, seconds: float | None, most: int = 3) -> list[str]:
    if t is None:
        return []
    rate = f" ({t.closes / seconds:,.1f}/s)" if seconds else ""
    short = sum(t.short_lived.values())
    unacked = sum(t.unacked_by_port_owner.values())
    out = [f"closed: {t.closes:,}{rate}  short-lived {short:,}  unacked {unacked:,}"
           f"  lost {t.lost:,}"]
    for (port, verdict), n in sorted(t.by_port_verdict.items(), key=lambda kv: -kv[1])[:most]:
        out.append(f"  port {port:<8}{verdict:<14}{n:>8,}")
    for (remote, owner), n in sorted(t.short_lived.items(), key=lambda kv: -kv[1])[:most]:
        out.append(printable(f"  short-lived -> {remote} by {owner}: {n:,}"))
    for (port, owner), n in sorted(t.unacked_by_port_owner.items(),
                                   key=lambda kv: -kv[1])[:most]:
        out.append(printable(f"  unacked data on port {port} by {owner}: {n:,}"))
    return out


class Screen:
    """A terminal drawn in place: the alternate screen, no cursor, one write per frame."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def size(self) -> tuple[int, int]:
        """Return the terminal's (columns, lines) now (it may have been resized)."""
        try:
            size = os.get_terminal_size(self.out.fileno())
        except (OSError, ValueError):
            size = shutil.get_terminal_size()
        return size.columns, size.lines

    def open(self) -> None:
        """Switch to the alternate screen and hide the cursor."""
        self.out.write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")
        self.out.flush()

    def draw(self, lines: Sequence[str]) -> None:
        """Overwrite the screen with ``lines``: home, each line cleared to its end, the rest."""
        text = "\x1b[H" + "".join(
            ("\x1b[1m" + line + "\x1b[0m" if i == 0 else line) + "\x1b[K"
            + ("\r\n" if i < len(lines) - 1 else "") for i, line in enumerate(lines))
        self.out.write(text + "\x1b[J")
        self.out.flush()

    def close(self) -> None:
        """Show the cursor again and leave the alternate screen."""
        self.out.write("\x1b[?25h\x1b[?1049l")
        self.out.flush()
