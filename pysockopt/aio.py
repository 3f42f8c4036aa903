"""asyncio heartbeat runners; this import path stays for users: see pysockopt.heartbeat.aio."""

from __future__ import annotations

from .heartbeat.aio import AsyncHeartbeats, send_heartbeats

__all__ = ["AsyncHeartbeats", "send_heartbeats"]
