"""Private helpers shared by every concern: socket arguments and native error returns."""

from __future__ import annotations

import errno
import os
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
    would say for any other descriptor that is not open.
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
        fd = sock.fileno()
        if type(fd) is not int:
            raise TypeError(
                f"{type(sock).__name__}.fileno() returned {type(fd).__name__}, not int")
    if not _FD_MIN <= fd <= _FD_MAX:
        raise OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (fd {fd} is out of range)")
    return fd


_FD_MIN = -(2**31)
_FD_MAX = 2**31 - 1


def os_error(rc: int, what: str) -> OSError:
    """Build the OSError for a native ``-errno`` return; Python picks the usual subclass.

    ``what`` says what was being done, e.g. ``"setting TCP_KEEPIDLE"``.
    """
    code = -rc
    return OSError(code, f"{os.strerror(code)} ({what})")
