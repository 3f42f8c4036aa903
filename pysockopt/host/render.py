"""The text report of a Diagnosis, for a person at a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._format import count, printable, processes

if TYPE_CHECKING:  # the type only: model.py imports this module, never the other way round
    from .model import Diagnosis

__all__ = ["render_diagnosis"]


def render_diagnosis(d: Diagnosis) -> str:
    """Return a report a person reads in ten seconds.

    Every line goes through ``printable``: process names and anything else that came from
    /proc or the network reach the terminal escaped, never as control sequences.
    """
    scope = f" on port {d.port}" if d.port is not None else ""
    counts = ", ".join(f"{s.label} {n}" for s, n in
                       sorted(d.counts.items(), key=lambda kv: -kv[1]))
    lines = [f"{count(d.total, 'TCP socket')}{scope}" + (f": {counts}" if counts else "")]
    if d.interval is not None:
        lines.append(f"Rates measured over {d.interval:.1f} s (two samples).")
    if not d.problems:
        lines.append("No problems found." if d.complete
                     else "No problems found in what could be seen.")
    for u in d.unseen:
        lines.append(f"Not looked at: {u}.")
    for f in d.findings:
        lines.append("")
        lines.append(f"{f.severity.label.upper():8} {f.code}: {f.summary}")
        numbers = "  ".join(f"{e.name}={e.value}" for e in f.evidence)
        lines.append(f"         {numbers}")
        if f.processes:
            lines.append(f"         held by {processes(f.processes)}")
        lines.append(f"         -> {f.advice}")
    return "".join(printable(line) + "\n" for line in lines)
