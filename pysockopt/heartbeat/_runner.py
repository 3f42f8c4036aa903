"""What the thread and asyncio runners share: their source, their grace period, closing now."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Hashable
from typing import Any, TypeVar

from .._validate import check_seconds
from .liveness import KernelLiveness
from .monitor import HeartbeatMonitor

__all__ = ["close_now", "grace_value", "unpack_source"]

K = TypeVar("K", bound=Hashable)


def unpack_source(
    source: HeartbeatMonitor[K] | KernelLiveness[K],
) -> tuple[HeartbeatMonitor[K], KernelLiveness[K] | None]:
    """Return ``(monitor, kernel)`` for a runner given a monitor or a KernelLiveness."""
    if isinstance(source, KernelLiveness):
        return source.monitor, source
    return source, None


def grace_value(grace: object) -> float:
    """Return the runner's grace period (seconds >= 0) as float, or raise as _validate does."""
    return check_seconds("grace", grace, zero=True)


def close_now(conn: Any) -> None:
    """Close a socket or an asyncio StreamWriter at once, even when its peer is dead.

    A socket: shutdown(SHUT_RDWR) wakes a thread blocked reading it, then close. A writer:
    its transport is aborted when data is still buffered (a graceful close waits for the
    buffer to drain, which to a dead peer is never), else closed. Already closed is fine.
    """
    shutdown = getattr(conn, "shutdown", None)
    if shutdown is not None:  # a socket (asyncio's StreamWriter has no shutdown)
        with contextlib.suppress(OSError):
            shutdown(socket.SHUT_RDWR)
        conn.close()
        return
    transport = conn.transport
    if transport.is_closing():
        return
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()
