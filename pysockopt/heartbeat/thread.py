"""Thread runners: HeartbeatThread (server side) and HeartbeatSenderThread (client side).

``HeartbeatThread`` runs a HeartbeatMonitor (or a KernelLiveness) in one thread that sleeps
until the next non-empty tick; ``HeartbeatSenderThread`` writes a heartbeat on a socket only
when nothing else was written for an interval.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import socket
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, Generic, TypeVar

from ._runner import close_now, grace_value, unpack_source
from .liveness import KernelLiveness
from .monitor import CloseReason, HeartbeatMonitor
from .sender import HeartbeatSender

__all__ = ["HeartbeatSenderThread", "HeartbeatThread"]

K = TypeVar("K", bound=Hashable)


class HeartbeatThread(Generic[K]):
    """Runs a HeartbeatMonitor in one thread that sleeps until the next non-empty tick.

    Give it a HeartbeatMonitor, or a KernelLiveness to also run its TCP_INFO sweeps, one shard
    at a time, in the same thread. Use its ``add``, ``beat`` and ``remove`` from any thread
    (they take a lock around the monitor).

    With ``close=True`` the keys are sockets and the runner closes the ones it drops: an
    expired one gets shutdown(SHUT_WR) at once, so a peer that was merely late can still
    send what it has and reads our FIN, and is closed ``grace`` seconds later
    (shutdown(SHUT_RDWR), which wakes a thread blocked reading it, then close); one replaced
    by a new connection of the same identity, or reaped by a sweep (PEER_CLOSED, DEAD, GONE),
    is closed at once. ``on_close(key, reason)`` is called for every key dropped (from the
    runner thread, or from add()'s caller for REPLACED), after the runner's own closing; with
    ``close=False`` it is the only action.

    The monitor's clock must be ``time.monotonic`` (or tick with it): the thread sleeps on it.
    """

    def __init__(
        self,
        monitor: HeartbeatMonitor[K] | KernelLiveness[K],
        *,
        close: bool = True,
        on_close: Callable[[K, CloseReason], None] | None = None,
        grace: float = 1.0,
        name: str = "pysockopt-heartbeat",
    ) -> None:
        self.monitor, self.kernel = unpack_source(monitor)
        self.grace = grace_value(grace)
        self._close_socks = close
        self._on_close = on_close
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing: list[tuple[float, int, Any]] = []  # (when, seq, sock): grace periods
        self._seq = itertools.count()
        self._socks: dict[K, Any] = {}  # key -> its socket, where add() was given one
        self._wake_at: float | None = None  # when the sleeping thread wakes (inf: never)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # Exceptions raised by on_close, by closing a socket, or inside the runner's own
        # step (a sweep, the monitor): recorded here, and the runner goes on.
        self.errors: list[BaseException] = []

    # --- thread-safe front of the monitor

    def add(self, key: K, *, identity: Hashable = None, sock: Any = None) -> K | None:
        """Track ``key``; an older key of the same identity is dropped (REPLACED) and returned.

        ``sock`` is the key's socket (default: the key itself): the one the runner closes
        and, with a KernelLiveness, the one whose TCP_INFO it reads.
        """
        with self._lock:
            if self.kernel is not None:
                dropped = self.kernel.add(key, sock, identity=identity)
            else:
                dropped = self.monitor.add(key, identity=identity)
            if sock is not None and sock is not key:
                self._socks[key] = sock
            else:
                self._socks.pop(key, None)
            wake_at = self._wake_at
            if wake_at is not None:
                # The new key is due by now + timeout + tick (cheaper than next_deadline()).
                monitor = self.monitor
                due = monitor.clock() + monitor.timeout + monitor.tick
                if self.kernel is not None:
                    sweep = self.kernel.next_sweep()
                    if sweep is not None:
                        due = min(due, sweep)
                if due < wake_at:
                    self._wake.notify()
        if dropped is not None:
            self._drop(dropped, CloseReason.REPLACED)
        return dropped

    def beat(self, key: K) -> bool:
        """Record life for ``key`` (see HeartbeatMonitor.beat)."""
        with self._lock:
            return self.monitor.beat(key)

    def remove(self, key: K) -> bool:
        """Stop tracking ``key`` (the application closed it); False if it was not tracked."""
        with self._lock:
            self._socks.pop(key, None)
            if self.kernel is not None:
                return self.kernel.remove(key)
            return self.monitor.remove(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self.monitor)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self.monitor

    # --- lifecycle

    def start(self) -> HeartbeatThread[K]:
        """Start the runner thread; return self."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread; sockets still in their grace period are closed now.

        May be called from ``on_close`` (the runner thread itself): it then does not wait.
        """
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            pending, self._closing = self._closing, []
        self._close_all(sock for _, _, sock in pending)

    def __enter__(self) -> HeartbeatThread[K]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the thread

    def _close_all(self, socks: Iterable[Any]) -> None:
        for sock in socks:
            try:
                close_now(sock)
            except Exception as exc:  # e.g. EBADF: its fd was os.close()d elsewhere
                self.errors.append(exc)

    def _drop(self, key: K, reason: CloseReason) -> None:
        with self._lock:
            sock = self._socks.pop(key, key)
        try:
            if self._close_socks:
                if reason is CloseReason.EXPIRED and self.grace > 0 and not self._stopping:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    when = self.monitor.clock() + self.grace
                    with self._lock:
                        if not self._stopping:
                            heapq.heappush(self._closing, (when, next(self._seq), sock))
                            sock = None
                    if sock is not None:  # stop() ran meanwhile: no grace period left
                        close_now(sock)
                else:
                    close_now(sock)
        except Exception as exc:
            self.errors.append(exc)
        if self._on_close is not None:
            try:
                self._on_close(key, reason)
            except Exception as exc:  # a callback's bug must not kill the runner
                self.errors.append(exc)

    def _run(self) -> None:
        monitor = self.monitor
        kernel = self.kernel
        clock = monitor.clock
        while True:
            due: list[Any] = []
            dropped: list[tuple[K, CloseReason]] = []
            failed = False
            with self._lock:
                if self._stopping:
                    return
                try:
                    # With a KernelLiveness, the overdue sweeps come first: a late runner
                    # asks the kernel before it declares anyone dead.
                    dropped += kernel.expired() if kernel is not None else [
                        (key, CloseReason.EXPIRED) for key in monitor.expired()]
                except Exception as exc:
                    self.errors.append(exc)
                    failed = True
                now = clock()
                while self._closing and self._closing[0][0] <= now:
                    due.append(heapq.heappop(self._closing)[2])
                if not dropped and not due:
                    wake = [t for t in (monitor.next_deadline(),
                                        kernel.next_sweep() if kernel is not None else None,
                                        self._closing[0][0] if self._closing else None)
                            if t is not None]
                    # After a failure, retry no sooner than a tick: an error must not spin.
                    at = max(min(wake), now + monitor.tick) if failed and wake else (
                        min(wake) if wake else math.inf)
                    self._wake_at = at
                    self._wake.wait(None if at == math.inf else max(0.0, at - now))
                    self._wake_at = None
                    continue
            self._close_all(due)
            for key, reason in dropped:
                self._drop(key, reason)


#: How soon HeartbeatSenderThread retries the rest of a heartbeat a full buffer cut short.
_RETRY: Final = 0.05


class HeartbeatSenderThread:
    """Client side for blocking sockets: a thread that sends ``payload`` when the line is quiet.

    Send everything else through ``send(data)`` (it counts as a write and is serialised with
    the heartbeats); a heartbeat goes out only when nothing was sent for the sender's jittered
    interval (see HeartbeatSender). The heartbeat itself is sent without blocking: when the
    send buffer is full (a dead or stalled peer) data is already queued, so none is needed,
    and stop() never waits on the network. The thread ends when the socket fails or
    ``stop()``.
    """

    def __init__(
        self,
        sock: socket.socket,
        payload: bytes,
        interval: float,
        *,
        jitter: float = 0.2,
        sender: HeartbeatSender | None = None,
    ) -> None:
        if not isinstance(payload, (bytes, bytearray, memoryview)) or not payload:
            raise TypeError("payload must be non-empty bytes")
        self.sock = sock
        self.payload = bytes(payload)
        self.sender = sender or HeartbeatSender(interval, jitter=jitter)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pysockopt-heartbeat-sender",
                                        daemon=True)
        self.error: OSError | None = None  # why the thread ended, if the socket failed
        self._pending = b""  # the unsent rest of a heartbeat
        self._retry_at = 0.0

    def send(self, data: bytes) -> None:
        """Send ``data`` (sendall) and note the write."""
        with self._lock:
            if self._pending:  # the rest of a heartbeat first, so frames never interleave
                self.sock.sendall(self._pending)
                self._pending = b""
                self.sender.sent()
            self.sock.sendall(data)
            self.sender.wrote()

    def start(self) -> HeartbeatSenderThread:
        """Start the thread; return self."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop sending heartbeats (the socket is left open); wait at most ``timeout`` s."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> HeartbeatSenderThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        clock = self.sender.clock
        while not self._stop.is_set():
            with self._lock:
                due = self._retry_at if self._pending else self.sender.next_due()
                delay = due - clock()
                if delay <= 0:
                    try:
                        self._send_heartbeat()
                    except OSError as err:
                        self.error = err
                        return
                    continue
            self._stop.wait(delay)

    def _send_heartbeat(self) -> None:
        # Never blocks (the lock is held): with a dead peer the send buffer fills, and a
        # blocking send would hang here, and stop() and send() with it, for many minutes.
        data = self._pending or self.payload
        try:
            n = self.sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, TimeoutError):
            n = 0
        if n == 0 and not self._pending:
            # Buffer full: data is already queued for the peer, no heartbeat needed now.
            self.sender.wrote()
            return
        self._pending = data[n:]
        if self._pending:  # cut short by a full buffer: the rest goes out before anything
            self._retry_at = self.sender.clock() + _RETRY
        else:
            self.sender.sent()
