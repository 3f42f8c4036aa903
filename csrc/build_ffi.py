"""cffi build script (out-of-line API mode) for pysockopt._native.

Every ``csrc/*.h`` is the C API that Python may call; the headers are written so that they are
valid both as C and as a cffi cdef, and this script reads them as the cdef. Every ``csrc/*.c``
is compiled into the one extension module, except the units ``ONLY_ON`` keeps to another
platform: the one place the build chooses by platform (pysockopt/_platform.py then answers
from what was built).
"""

from __future__ import annotations

import pathlib
import runpy
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
# Relative paths keep absolute build-machine paths out of the sdist/wheel metadata.
ROOT = HERE.parent
#: C units (csrc/NAME.h and csrc/NAME.c, by NAME) that only these platforms build: the
#: kernel interfaces they call exist nowhere else ("events": the closed-connection subscriber
#: that comes next). Every other unit builds everywhere.
ONLY_ON: dict[str, frozenset[str]] = {
    "linux": frozenset({"events", "nl", "netns", "remote", "sockdiag", "tally"}),
}
PLATFORM = "linux" if sys.platform.startswith("linux") else sys.platform


def _built_here(path: pathlib.Path) -> bool:
    return all(path.stem not in units for where, units in ONLY_ON.items() if where != PLATFORM)


HEADERS = sorted(h for h in HERE.glob("*.h") if _built_here(h))
SOURCES = sorted(c for c in HERE.glob("*.c") if _built_here(c))
# The errno table is generated from the platform's <errno.h> and appended to the module's own
# source (so no generated file lands in the tree); see gen_errno_table.py.
ERRNO_TABLE = runpy.run_path(str(HERE / "gen_errno_table.py"))["table_source"]()

ffibuilder = FFI()
for header in HEADERS:
    ffibuilder.cdef(header.read_text())

ffibuilder.set_source(
    "pysockopt._native",
    "#include <stdint.h>\n" + "".join(f'#include "{h.name}"\n' for h in HEADERS) + ERRNO_TABLE,
    sources=[str(s.relative_to(ROOT)) for s in SOURCES],
    include_dirs=[str(HERE.relative_to(ROOT))],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    py_limited_api=False,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
