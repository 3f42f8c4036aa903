"""The client side of heartbeats, sans-IO: when is a heartbeat due.

``HeartbeatSender`` is told when the application wrote (``wrote``) or a heartbeat went out
(``sent``) and says when the next one is due: only when nothing else was written for an
interval, with jitter so many clients do not beat in step. The thread and asyncio senders
(thread.py, aio.py) sit on top.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from .._validate import check_number, check_seconds

__all__ = ["HeartbeatSender"]


class HeartbeatSender:
    """Client side: when to send a heartbeat so that the server sees life every ``interval``.

    Sans-IO. Tell it about every write (``wrote()``, heartbeats included); ``next_due()`` is
    when a heartbeat is needed because nothing else was written. Each period is
    ``interval * (1 - jitter * r)`` with r uniform in [0, 1), drawn afresh after every
    heartbeat: heartbeats never come later than ``interval``, and clients that all reconnected
    at the same moment drift apart instead of pinging the server in lockstep.
    """

    __slots__ = ("_clock", "_interval", "_jitter", "_last", "_period", "_random")

    def __init__(
        self,
        interval: float,
        *,
        jitter: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._interval = check_seconds("interval", interval)
        self._jitter = check_number("jitter", jitter, 0, 1,
                                    allowed="0 <= jitter < 1 (a fraction of interval)")
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._last = clock()
        self._period = self._draw()

    def _draw(self) -> float:
        return self._interval * (1.0 - self._jitter * self._random())

    @property
    def interval(self) -> float:
        """The longest time between two writes."""
        return self._interval

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the sender reads (seconds)."""
        return self._clock

    def wrote(self) -> None:
        """Note that something was written now (data or a heartbeat)."""
        self._last = self._clock()

    def sent(self) -> None:
        """Note that a heartbeat was written now; the next period gets a fresh jitter."""
        self._last = self._clock()
        self._period = self._draw()

    def next_due(self) -> float:
        """Clock time at which a heartbeat is due if nothing else is written before."""
        return self._last + self._period

    def due(self) -> bool:
        """Return True when nothing was written for the current period: send a heartbeat."""
        return self._clock() >= self._last + self._period
