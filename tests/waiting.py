"""The one way tests wait for the kernel: poll a condition until it holds, or fail saying what.

A fixed sleep before an assertion on kernel state is either too short on a loaded machine or
wasted time on an idle one; polling is neither. The limit is a ceiling, never a measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is checked: short next to any kernel timer, long next to a syscall.
INTERVAL = 0.01


def wait_for(cond: Callable[[], T | None], timeout: float = 5.0,
             what: str = "the condition") -> T:
    """Return ``cond()``'s first true value; raise AssertionError after ``timeout`` seconds.

    A true value is never None, so a condition returning ``X | None`` gives back an ``X``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(INTERVAL)


async def await_for(cond: Callable[[], T | None], timeout: float = 5.0,
                    what: str = "the condition") -> T:
    """wait_for() inside an event loop: sleeps with asyncio so the loop keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(INTERVAL)
