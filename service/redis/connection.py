"""One way to open a Redis client, so every part of a process talks to Redis alike."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(url: str, *, max_connections: int | None = None) -> aioredis.Redis:
    """A client that fails fast (2 s to connect, no silent retries) and checks idle
    connections; blocking reads set their own timeouts."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=None,
        health_check_interval=5,
        retry_on_error=[],
        max_connections=max_connections,
    )
