"""docs/generate.py: the generated sections of docs/*.md match the code's tables."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
from types import ModuleType

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_page_is_stale() -> None:
    gen = _generator()
    assert {p.name for p in gen.pages()} >= {"errno.md", "tcpinfo.md", "diagnose.md"}
    assert gen.stale() == [], "stale docs: run python docs/generate.py"


def test_every_section_name_has_a_generator_and_is_used() -> None:
    gen = _generator()
    used = {m["name"] for p in gen.pages() for m in gen.SECTION.finditer(p.read_text())}
    assert used == set(gen.GENERATORS)


@pytest.mark.parametrize(("page", "old", "new"), [
    ("errno.md", "| `ECONNRESET` |", "| `ECONNRESET-OLD` |"),
    ("tcpinfo.md", "| `rtt` |", "| `rtt_old` |"),
    ("diagnose.md", "| `CLOSE_WAIT_PILE` |", "| `CLOSE_WAIT_OLD` |"),
])
def test_an_edit_inside_a_section_is_stale_and_rewritten(page: str, old: str, new: str) -> None:
    gen = _generator()
    text = (ROOT / "docs" / page).read_text()
    edited = text.replace(old, new, 1)
    assert edited != text and gen.render(edited) == text


def test_hand_written_text_outside_the_markers_is_kept() -> None:
    gen = _generator()
    text = (ROOT / "docs" / "diagnose.md").read_text()
    edited = text.replace("# pysockopt diagnose", "# pysockopt diagnose (edited)", 1)
    assert edited != text and gen.render(edited) == edited


def test_check_from_another_directory(tmp_path: pathlib.Path) -> None:
    # Paths come from the script's own location, never from the working directory.
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--bogus"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_tcpinfo_sizes_grow_in_kernel_order() -> None:
    # The line used to list versions in table order, with "5.5: 8" from a bitfield in byte 7.
    from pysockopt.tcpinfo import TCP_INFO_FIELDS, TCP_INFO_KNOWN_SIZE

    text = (ROOT / "docs" / "tcpinfo.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("Bytes returned by kernel"))
    steps = [((int(major), int(minor)), int(n))
             for major, minor, n in re.findall(r"(\d+)\.(\d+): (\d+)", line)]
    versions = [v for v, _ in steps]
    sizes = [n for _, n in steps]
    assert versions == sorted(versions) and sizes == sorted(set(sizes))  # both only grow
    for version, size in steps:
        assert size == max(f.end for f in TCP_INFO_FIELDS
                           if tuple(int(x) for x in f.kernel.split(".")) <= version)
    assert steps[0] == ((2, 6), 104) and sizes[-1] == TCP_INFO_KNOWN_SIZE


def test_tcpinfo_rows_say_what_the_kernel_means() -> None:
    import socket

    import pysockopt

    rows = {ln.split("`")[1]: ln for ln in (ROOT / "docs" / "tcpinfo.md").read_text()
            .splitlines() if ln.startswith("| `")}
    assert "ago" not in rows["total_rto_time"] and "total" in rows["total_rto_time"]
    assert "4294967295" in rows["min_rtt"]
    # What the row says, the kernel does: no RTT sample yet on a socket never connected.
    with socket.socket() as s:
        assert pysockopt.tcp_info(s).min_rtt in (None, 0xFFFFFFFF)
