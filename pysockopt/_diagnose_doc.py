"""Regenerate docs/diagnose.md from the diagnosis rules: ``python -m pysockopt._diagnose_doc``.

With ``--check`` it only exits 1 when the committed file is stale (tests do the same).
"""

from __future__ import annotations

import pathlib
import sys

from .diagnose import rules_markdown

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "diagnose.md"


def main(argv: list[str]) -> int:
    """Write (or with ``--check`` compare) docs/diagnose.md; return the exit status."""
    text = rules_markdown()
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            sys.stderr.write(f"{DOC} is stale: run python -m pysockopt._diagnose_doc\n")
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
