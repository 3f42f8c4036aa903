"""asyncio runners for heartbeats: a server-side watcher of streams and a client-side sender.

``AsyncHeartbeats`` drives a HeartbeatMonitor from the event loop with one ``loop.call_at``
for the next tick that has anything in it; ``watch(reader, writer, identity=...)`` makes every
read of a stream a beat, drops the stream when it closes, and closes it when it falls silent.
``send_heartbeats`` is the client side: it writes a heartbeat only when nothing else was
written for an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from ._runner import close_now, grace_value, unpack_source
from .liveness import KernelLiveness
from .monitor import CloseReason, HeartbeatMonitor
from .sender import HeartbeatSender

__all__ = ["AsyncHeartbeats", "send_heartbeats"]

Writer = asyncio.StreamWriter
Timer = asyncio.TimerHandle


class AsyncHeartbeats:
    """Close asyncio streams whose peer fell silent; run it in the loop that serves them.

    ``watch(reader, writer, identity=...)`` in a connection handler tracks the stream: every
    chunk the transport reads is a beat (so any data is life, not only heartbeat messages);
    when the connection closes it is forgotten. When the monitor says a stream expired it gets
    ``write_eof()`` (shutdown(SHUT_WR) once buffered data is out) and keeps reading, so a peer
    that was only late loses nothing it still sends; ``grace`` seconds later, or as soon as the
    peer's FIN arrives, the transport is closed (aborted if data is still unsent). A stream
    replaced by a new one of the same identity is closed at once.

    ``on_close(writer, reason)`` is called after the runner started closing a stream.
    One timer (``loop.call_at``) wakes the runner at the next tick that has anything in it.

    Given a KernelLiveness instead of a monitor (or made by ``for_detection``), each watched
    stream's socket gets the plan's keepalive and a second timer runs the TCP_INFO sweeps,
    one shard per callback: streams whose peer closed (CLOSE_WAIT) or that the kernel gave up
    on are closed at once, and idle peers that still answer keepalive probes stay.
    """

    def __init__(
        self,
        monitor: HeartbeatMonitor[Writer] | KernelLiveness[Writer],
        *,
        grace: float = 1.0,
        on_close: Callable[[Writer, CloseReason], None] | None = None,
    ) -> None:
        self.monitor, self.kernel = unpack_source(monitor)
        self.grace = grace_value(grace)
        self._on_close = on_close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: Timer | None = None
        self._sweep_timer: Timer | None = None
        self._timer_at = self._sweep_at = math.inf  # when the timers fire (monitor clock)
        self._grace: dict[Writer, Timer] = {}
        self._readers: dict[Writer, asyncio.StreamReader] = {}  # hooked, until forgotten
        self._closed = False
        # Exceptions raised by on_close or inside a timer callback: recorded, the runner goes on.
        self.errors: list[BaseException] = []

    @classmethod
    def for_detection(
        cls,
        seconds: float,
        *,
        count: int = 3,
        grace: float = 1.0,
        on_close: Callable[[Writer, CloseReason], None] | None = None,
        shard_size: int = 1024,
    ) -> AsyncHeartbeats:
        """Return a kernel-assisted runner that finds a vanished peer within ``seconds``.

        See LivenessPlan.for_detection for how the budget is split.
        """
        kernel: KernelLiveness[Writer] = KernelLiveness.for_detection(
            seconds, count=count, shard_size=shard_size)
        return cls(kernel, grace=grace, on_close=on_close)

    # --- tracking

    def watch(
        self, reader: asyncio.StreamReader, writer: Writer, *, identity: Hashable = None
    ) -> Writer | None:
        """Track the stream ``(reader, writer)``; return the stream it replaced (closed), if any.

        Every ``reader.feed_data`` (each chunk the transport reads) beats; EOF after the
        transport closed, or a read error, forgets the stream. A peer's FIN alone does not:
        a half-closed stream beats no more and expires unless the application closes it.
        Watching a watched stream again counts as a beat and re-binds its identity. A stream
        whose transport is already closing (the peer reset it before the handler got here)
        is not tracked, and replaces nothing: None.
        """
        if self._closed:
            raise RuntimeError("AsyncHeartbeats is closed")
        if not isinstance(reader, asyncio.StreamReader):
            raise TypeError(f"reader must be an asyncio.StreamReader, not {type(reader).__name__}")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if writer.transport.is_closing():
            # Closed before it was watched: its reader's hooks would never fire again, so
            # tracking it would keep reader, writer and transport for good.
            self._forget(writer)
            return None
        sock = None
        if self.kernel is not None:
            sock = writer.get_extra_info("socket")
            if sock is None:
                raise TypeError("kernel-assisted mode needs a transport with a socket")
        if writer not in self._readers:
            self._hook(reader, writer)
        if self.kernel is not None:
            dropped = self.kernel.add(writer, sock, identity=identity)
            self._schedule_sweep()
        else:
            dropped = self.monitor.add(writer, identity=identity)
        self._schedule()
        if dropped is not None:
            self._close(dropped, CloseReason.REPLACED)
        return dropped

    def _hook(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        transport = writer.transport
        feed_data = reader.feed_data
        feed_eof = reader.feed_eof
        set_exception = reader.set_exception
        beat = self.monitor.beat
        grace = self._grace

        def on_data(data: Any) -> None:
            if writer not in grace:  # an expired stream still reads, but no longer beats
                beat(writer)
            feed_data(data)

        def on_eof() -> None:
            feed_eof()
            if transport.is_closing():
                self._forget(writer)
            elif writer in grace:  # expired, and the peer has now said all it had
                self._finish(writer)

        def on_error(exc: Exception) -> None:
            set_exception(exc)
            self._forget(writer)

        # StreamReaderProtocol feeds the reader through these, whatever the loop is; they are
        # instance attributes over the class's methods, removed again by _forget.
        reader.feed_data = on_data  # type: ignore[method-assign]
        reader.feed_eof = on_eof  # type: ignore[method-assign]
        reader.set_exception = on_error  # type: ignore[method-assign]
        self._readers[writer] = reader

    def unwatch(self, writer: Writer) -> bool:
        """Stop tracking ``writer`` (it is not closed); False if it was not tracked."""
        return self._forget(writer)

    def _forget(self, writer: Writer) -> bool:
        handle = self._grace.pop(writer, None)
        if handle is not None:
            handle.cancel()
        self._unhook(writer)
        if self.kernel is not None:
            return self.kernel.remove(writer)
        return self.monitor.remove(writer)

    def _unhook(self, writer: Writer) -> None:
        reader = self._readers.pop(writer, None)
        if reader is not None:
            for name in ("feed_data", "feed_eof", "set_exception"):
                vars(reader).pop(name, None)

    def __len__(self) -> int:
        return len(self.monitor)

    def __contains__(self, writer: object) -> bool:
        return writer in self.monitor

    # --- timers

    def _call_at(self, when: float | None, callback: Callable[[], None]) -> Timer | None:
        # ``when`` is on the monitor's clock, which need not be the loop's.
        if when is None or self._closed or self._loop is None:
            return None
        loop = self._loop
        return loop.call_at(loop.time() + max(0.0, when - self.monitor.clock()), callback)

    def _schedule(self) -> None:
        monitor = self.monitor
        if self._timer is not None:
            # A key just added is due by now + timeout + tick: reschedule only if sooner.
            if monitor.clock() + monitor.timeout + monitor.tick >= self._timer_at:
                return
            self._timer.cancel()
        when = monitor.next_deadline()
        self._timer = self._call_at(when, self._run)
        self._timer_at = math.inf if when is None else when

    def _run(self) -> None:
        self._timer = None
        try:
            if self.kernel is not None:  # overdue sweeps first: the kernel may know better
                self._close_all(self.kernel.expired())
            else:
                self._close_all([(w, CloseReason.EXPIRED) for w in self.monitor.expired()])
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self._schedule()
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self.kernel is None:
            return
        when = self.kernel.next_sweep()
        if self._sweep_timer is not None:
            if when is None or when >= self._sweep_at:
                return
            self._sweep_timer.cancel()
        self._sweep_timer = self._call_at(when, self._sweep)
        self._sweep_at = math.inf if when is None else when

    def _sweep(self) -> None:
        self._sweep_timer = None
        assert self.kernel is not None
        try:
            self._close_all(self.kernel.sweep_due())
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self._schedule_sweep()

    def _close_all(self, dropped: Iterable[tuple[Writer, CloseReason]]) -> None:
        for writer, reason in dropped:  # one failure must not leave the others open
            try:
                self._close(writer, reason)
            except Exception as exc:
                self.errors.append(exc)

    def _close(self, writer: Writer, reason: CloseReason) -> None:
        transport = writer.transport
        if transport.is_closing():  # its reader may never hear of it again: unhook now
            self._unhook(writer)
        if reason is CloseReason.EXPIRED and self.grace > 0 and not transport.is_closing():
            assert self._loop is not None
            if transport.can_write_eof():
                # OSError: already reset; RuntimeError: closing meanwhile.
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
            self._grace[writer] = self._loop.call_later(self.grace, self._finish, writer)
        else:
            self._grace.pop(writer, None)
            close_now(writer)
        if self._on_close is not None:
            try:
                self._on_close(writer, reason)
            except Exception as exc:  # a callback's bug must not stop the runner
                self.errors.append(exc)

    def _finish(self, writer: Writer) -> None:
        handle = self._grace.pop(writer, None)
        if handle is not None:
            handle.cancel()
        close_now(writer)

    # --- lifecycle

    def close(self) -> None:
        """Stop the timers; streams in their grace period are closed now, others are left.

        Every reader gets its own methods back: nothing of the streams is kept.
        """
        self._closed = True
        for timer in (self._timer, self._sweep_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._sweep_timer = None
        for writer in list(self._grace):
            self._finish(writer)
        for writer in list(self._readers):
            self._unhook(writer)

    async def __aenter__(self) -> AsyncHeartbeats:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def send_heartbeats(
    writer: Writer,
    payload: bytes,
    interval: float,
    *,
    jitter: float = 0.2,
    sender: HeartbeatSender | None = None,
) -> asyncio.Task[None]:
    """Start a task that writes ``payload`` whenever nothing was written for ``interval``.

    Every ``writer.write``/``writelines`` counts as a write (the writer is wrapped for that),
    so a busy connection sends no heartbeats at all. Each period is shortened by up to
    ``jitter`` (a fraction), drawn afresh each time, so clients that reconnected together do
    not ping together. The task ends when the transport closes; cancel it to stop earlier.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)) or not payload:
        raise TypeError("payload must be non-empty bytes")
    beat = sender or HeartbeatSender(interval, jitter=jitter)
    write = writer.write
    writelines = writer.writelines

    def counted_write(data: Any) -> None:
        beat.wrote()
        write(data)

    def counted_writelines(data: Any) -> None:
        beat.wrote()
        writelines(data)

    writer.write = counted_write  # type: ignore[method-assign]
    writer.writelines = counted_writelines  # type: ignore[method-assign]

    async def run() -> None:
        transport = writer.transport
        clock = beat.clock
        while not transport.is_closing():
            delay = beat.next_due() - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            write(payload)
            beat.sent()
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                return

    return asyncio.get_running_loop().create_task(run(), name="pysockopt-heartbeat-sender")

