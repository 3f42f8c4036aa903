"""The C core's one door: the only module that imports ``pysockopt._native``.

Every other module takes ``ffi`` and ``lib`` from here, and the typed helpers below where one
fits: they return values, or raise the OSError the C core's ``-errno`` maps to (Python picks
ConnectionResetError, PermissionError and friends from the errno), all through one boundary,
``native_errors(context)``. Native objects that own memory (a sock_diag sink, a tally) are
made here already owned by ``ffi.gc``: the C side's free runs when the last Python reference
goes, so no caller frees by hand and no path leaks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

from ._native import ffi, lib
from ._sock import os_error

__all__ = [
    "NativeFailure",
    "check",
    "ffi",
    "lib",
    "native_errors",
    "netns_socket",
    "new_sink",
    "new_tally",
]


class NativeFailure(Exception):
    """A native call returned ``-errno``; ``native_errors`` turns it into the mapped OSError.

    Raised by ``check`` only inside a ``native_errors`` block, which never lets it escape.
    """

    def __init__(self, rc: int, detail: str = "") -> None:
        super().__init__(rc, detail)
        self.rc = rc
        self.detail = detail


def check(rc: int, detail: str = "") -> int:
    """Return ``rc`` when it is not negative, else raise NativeFailure for it.

    Call it inside ``native_errors(context)``; ``detail`` (e.g. "step setns") is added to
    the context of the OSError raised there.
    """
    if rc < 0:
        raise NativeFailure(rc, detail)
    return rc


@contextlib.contextmanager
def native_errors(context: str) -> Iterator[None]:
    """Turn the C core's ``-errno`` into Python's OSError, at one boundary.

    Inside the block, ``check(lib.pso_...(...))`` returns the value or stops the block; it
    leaves as ``OSError(errno, "<strerror> (<context>[: detail])")``, the usual subclass for
    the errno, chained to nothing (the C core has no Python traceback worth keeping).
    """
    try:
        yield
    except NativeFailure as failure:
        what = f"{context}: {failure.detail}" if failure.detail else context
        raise os_error(failure.rc, what) from None


def new_sink(keep: bool) -> Any:  # cffi cdata: Any stays in the binding layer
    """Return a zeroed ``struct pso_sd_sink *`` (records kept when ``keep``), owned by ffi.gc.

    Its records and tcp_info blob are freed (pso_sd_sink_free) when the last reference goes.
    """
    sink = ffi.gc(ffi.new("struct pso_sd_sink *"), lib.pso_sd_sink_free)
    lib.pso_sd_sink_init(sink, 1 if keep else 0)
    return sink


def new_tally() -> Any:  # cffi cdata: Any stays in the binding layer
    """Return a zeroed ``struct pso_tally *`` owned by ffi.gc (pso_tally_free at the end)."""
    return ffi.gc(ffi.new("struct pso_tally *"), lib.pso_tally_free)


#: netns.h's failure steps, as the words an error message uses.
_NETNS_STEPS: Final = {
    lib.PSO_NETNS_STEP_THREAD: "starting the native thread",
    lib.PSO_NETNS_STEP_SETNS: "entering the namespace (setns)",
    lib.PSO_NETNS_STEP_SOCKET: "socket() inside the namespace",
}


def netns_socket(nsfd: int, family: int, kind: int, protocol: int = 0) -> int:
    """Return a close-on-exec socket descriptor made inside the network namespace ``nsfd``.

    A socket keeps the namespace it was made in, so the caller uses it from any thread; the
    caller's own thread never changes namespace (csrc/netns.h pso_netns_run). The caller
    closes the descriptor. Raises the mapped OSError naming the step that failed (EPERM
    entering without CAP_SYS_ADMIN, EINVAL when nsfd is no network namespace, ...).
    """
    step = ffi.new("int *")
    rc = lib.pso_netns_socket(nsfd, family, kind, protocol, step)
    with native_errors(f"making a socket in the namespace of fd {nsfd}"):
        return check(rc, _NETNS_STEPS.get(step[0], ""))
