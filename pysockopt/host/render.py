"""The text report of a Diagnosis, for a person at a terminal."""

from __future__ import annotations

from .model import Diagnosis

__all__ = ["render_diagnosis"]


def render_diagnosis(d: Diagnosis) -> str:
    """Return a report a person reads in ten seconds."""
    scope = f" on port {d.port}" if d.port is not None else ""
    counts = ", ".join(f"{s.label} {n}" for s, n in
                       sorted(d.counts.items(), key=lambda kv: -kv[1]))
    lines = [f"{d.total} TCP sockets{scope}" + (f": {counts}" if counts else "")]
    if d.interval is not None:
        lines.append(f"Rates measured over {d.interval:.1f} s (two samples).")
    if not d.problems:
        lines.append("No problems found.")
    for f in d.findings:
        lines.append("")
        lines.append(f"{f.severity.label.upper():8} {f.code}: {f.summary}")
        numbers = "  ".join(f"{e.name}={e.value}" for e in f.evidence)
        lines.append(f"         {numbers}")
        if f.processes:
            procs = ", ".join(f"{p.command} (pid {p.pid})" for p in f.processes)
            lines.append(f"         held by {procs}")
        lines.append(f"         -> {f.advice}")
    return "\n".join(lines) + "\n"
