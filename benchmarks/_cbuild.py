"""Compile the benchmarks' C helpers (benchmarks/c/*.c) at run time, once per run.

The floor of a host-wide listing (floor_dump.c: a sock_diag dump and nothing more) is loaded
as a shared library and called in-process, so a comparison times the dump, not a process
start; the socket holders (holder.c) are programs.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import cast

HERE = pathlib.Path(__file__).resolve().parent / "c"


@functools.cache
def _workdir() -> pathlib.Path:
    path = pathlib.Path(tempfile.mkdtemp(prefix="pso-bench-c-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _cc(*args: str) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc): the benchmark compiles its helpers")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", *args], check=True)


@functools.cache
def program(name: str) -> str:
    """Return the path of benchmarks/c/NAME.c compiled as a program."""
    out = _workdir() / name
    _cc("-o", str(out), str(HERE / f"{name}.c"))
    return str(out)


@functools.cache
def floor_dump() -> Callable[[int], int]:
    """Return the C function of floor_dump.c: (with_info) -> sockets dumped, or -errno."""
    out = _workdir() / "floor_dump.so"
    _cc("-shared", "-fPIC", "-o", str(out), str(HERE / "floor_dump.c"))
    fn = ctypes.CDLL(str(out)).floor_dump
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_long
    return cast(Callable[[int], int], fn)
