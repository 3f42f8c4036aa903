"""The wheel holds the runtime package and nothing else (no tests, docs generator, benchmarks)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_every_subpackage_and_only_runtime_code(tmp_path: pathlib.Path) -> None:
    # Build from a clean copy: a build/ left in a work tree by an earlier build would bring
    # modules that no longer exist into the wheel.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".*_cache", ".venv*"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("pysockopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    package = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert all(n.startswith("pysockopt/") for n in package), sorted(package)
    # Every subpackage of the source tree is in the wheel.
    for init in (ROOT / "pysockopt").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in package
    # Every module of the source tree is there, and nothing that is not a module of it.
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pysockopt").rglob("*.py")}
    assert {n for n in package if n.endswith(".py")} == source
    assert any(n.startswith("pysockopt/_native") and n.endswith(".so") for n in package)
    assert "pysockopt/py.typed" in package and "pysockopt/_native.pyi" in package
    assert not [n for n in package if "generate" in n or "/tests/" in n or "bench" in n]
