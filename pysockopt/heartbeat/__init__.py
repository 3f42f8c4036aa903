"""Heartbeats for many connections: sans-IO cores, thread and asyncio runners, kernel help.

- monitor.py: HeartbeatMonitor (sans-IO: no sockets, no threads, no event loop);
- sender.py: HeartbeatSender (sans-IO: when is a client's heartbeat due);
- liveness.py: LivenessPlan and KernelLiveness (batched TCP_INFO sweeps feed the monitor);
- thread.py: HeartbeatThread and HeartbeatSenderThread;
- aio.py: AsyncHeartbeats and send_heartbeats (also importable as ``pysockopt.aio``).
"""

from __future__ import annotations

from ._runner import close_now
from .liveness import KernelLiveness, LivenessPlan, Sweep
from .monitor import DEFAULT_TICKS, MAX_TICKS, CloseReason, HeartbeatMonitor, HeartbeatStats
from .sender import HeartbeatSender
from .thread import HeartbeatSenderThread, HeartbeatThread

__all__ = [
    "DEFAULT_TICKS",
    "MAX_TICKS",
    "CloseReason",
    "HeartbeatMonitor",
    "HeartbeatSender",
    "HeartbeatStats",
    "HeartbeatSenderThread",
    "HeartbeatThread",
    "KernelLiveness",
    "LivenessPlan",
    "Sweep",
    "close_now",
]
