"""Private helpers shared by every concern: socket arguments and native error returns."""

from __future__ import annotations

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
    """Return the descriptor behind ``sock`` or raise TypeError naming what was passed."""
    if type(sock) is int:
        return sock
    if isinstance(sock, bool) or not (isinstance(sock, int) or hasattr(sock, "fileno")):
        raise TypeError(
            "expected a socket, an object with fileno(), or an int file descriptor, "
            f"not {type(sock).__name__}"
        )
    if isinstance(sock, int):
        return int(sock)
    fd = sock.fileno()
    if type(fd) is not int:
        raise TypeError(f"{type(sock).__name__}.fileno() returned {type(fd).__name__}, not int")
    return fd


def os_error(rc: int, what: str) -> OSError:
    """Build the OSError for a native ``-errno`` return; Python picks the usual subclass.

    ``what`` says what was being done, e.g. ``"setting TCP_KEEPIDLE"``.
    """
    code = -rc
    return OSError(code, f"{os.strerror(code)} ({what})")
