"""Private helpers shared by every concern: socket arguments and native error returns."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Protocol


class HasFileno(Protocol):
    """Anything with a ``fileno()`` method: socket.socket, asyncio transports' sockets, files."""

    def fileno(self) -> int:
        """Return the underlying file descriptor."""
        ...


#: What every function that takes a socket accepts.
SocketLike = int | HasFileno


def fileno_of(sock: SocketLike) -> int:
    """Return the descriptor behind ``sock`` or raise TypeError naming what was passed.

    A number that cannot be a descriptor (outside a C int) is OSError(EBADF), as the kernel
    would say for any other descriptor that is not open. So is an object whose ``fileno()``
    raises ValueError (what a closed file object raises): a closed object is EBADF whether it
    is passed alone or in a batch (poll_tcp_info puts the same OSError in its place).
    """
    if type(sock) is int:
        fd = sock
    elif isinstance(sock, bool) or not (isinstance(sock, int) or hasattr(sock, "fileno")):
        raise TypeError(
            "expected a socket, an object with fileno(), or an int file descriptor, "
            f"not {type(sock).__name__}"
        )
    elif isinstance(sock, int):
        fd = int(sock)
    else:
        try:
            fd = sock.fileno()
        except ValueError as err:  # io objects: "I/O operation on closed file"
            raise OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (fileno() failed: {err})"
                          ) from err
        if type(fd) is not int:
            raise TypeError(
                f"{type(sock).__name__}.fileno() returned {type(fd).__name__}, not int")
    if not _FD_MIN <= fd <= _FD_MAX:
        raise OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (fd {fd} is out of range)")
    return fd


def filenos_of(socks: Sequence[SocketLike], what: str) -> tuple[list[int], dict[int, OSError]]:
    """Return each socket's descriptor (-1 for a bad one) and, by index, the bad ones' errors.

    A closed file object gives its OSError (EBADF) in place, so one bad entry never fails a
    batch; a value that is no socket-like object raises TypeError naming ``what`` and its index.
    """
    fds: list[int] = []
    bad: dict[int, OSError] = {}
    for i, sock in enumerate(socks):
        try:
            fds.append(fileno_of(sock))
        except TypeError as err:
            raise TypeError(f"{what}: socks[{i}]: {err}") from None
        except OSError as err:  # fileno_of makes a closed file object's ValueError EBADF
            bad[i] = err
            fds.append(-1)
    return fds, bad


def replaced(sock: SocketLike, fd: int) -> bool:
    """Tell whether ``sock`` no longer stands for descriptor ``fd`` (closed or given another).

    Checked after a native call that ran without the GIL: another thread may have closed the
    object meanwhile and a new socket taken its number, so what the call read or set belongs
    to that socket. An int descriptor is the caller's own number: never "replaced".
    """
    if isinstance(sock, int):
        return False
    try:
        return bool(sock.fileno() != fd)
    except (OSError, ValueError):
        return True


def closed_during_call(fd: int, what: str) -> OSError:
    """Build the OSError(EBADF) for an object whose descriptor was closed while ``what`` ran."""
    return OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (fd {fd} was closed during "
                                f"{what}; the number may now belong to another socket)")


_FD_MIN = -(2**31)
_FD_MAX = 2**31 - 1


def os_error(rc: int, what: str) -> OSError:
    """Build the OSError for a native ``-errno`` return; Python picks the usual subclass.

    ``what`` says what was being done, e.g. ``"setting TCP_KEEPIDLE"``.
    """
    code = -rc
    return OSError(code, f"{os.strerror(code)} ({what})")
