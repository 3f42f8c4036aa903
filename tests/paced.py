"""Sockets made at a known pace, for the tests of rates (test_sample.py, test_watch.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from sockpiles import Pile


class Pacer:
    """Runs ``step`` every ``period`` seconds on a fixed beat in a thread, until stopped.

    ``done`` counts the steps, so a test can compare a measured rate with the pace really
    kept (a busy machine may miss beats) as well as with the nominal one.
    """

    def __init__(self, period: float, step: Callable[[], None]) -> None:
        self.period, self.step = period, step
        self.done = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            try:
                self.step()
            except BaseException as exc:  # reported by stop()
                self.errors.append(exc)
                return
            self.done += 1
            k += 1
            self._stop.wait(max(0.0, start + k * self.period - time.monotonic()))

    def __enter__(self) -> Pacer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def close_wait_leak(pile: Pile, period: float = 0.1) -> Iterator[Pacer]:
    """Leak one server-side CLOSE_WAIT every ``period`` s on ``pile``'s listener."""

    def leak() -> None:
        client, server = pile._pair()
        client.close()           # the peer closes: FIN -> the server side is in CLOSE_WAIT
        pile.held.append(server)  # ... and the server never does

    with Pacer(period, leak) as pacer:
        yield pacer
