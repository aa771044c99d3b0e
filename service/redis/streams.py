"""A model's lane streams and their consumer group, as both queue sides see them."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.core.lanes import LANE_ORDER, Lane
from service.redis import keys


class LaneStreams:
    def __init__(self, redis: aioredis.Redis, model: str) -> None:
        self.redis = redis
        self.model = model
        self.by_lane: dict[Lane, str] = {lane: keys.lane_stream(model, lane) for lane in LANE_ORDER}
        self._groups_ready = False

    @property
    def keys(self) -> list[str]:
        return list(self.by_lane.values())

    async def ensure_groups(self) -> None:
        """Create the consumer group once (again after `forget_groups`)."""
        if self._groups_ready:
            return
        for stream in self.by_lane.values():
            try:
                await self.redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def forget_groups(self) -> None:
        """After a Redis error: a restarted Redis may have lost them."""
        self._groups_ready = False

    async def waiting(self, lane: Lane) -> int:
        """Entries not yet delivered to a worker (length minus delivered-and-unacked)."""
        stream = self.by_lane[lane]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xpending(stream, keys.GROUP)
            length, pending = await pipe.execute()
        return max(0, length - pending["pending"])

    async def next_undelivered(self, lane: Lane) -> tuple[bytes, dict[bytes, bytes]] | None:
        stream = self.by_lane[lane]
        groups = await self.redis.xinfo_groups(stream)
        last = next(
            (g["last-delivered-id"] for g in groups if g["name"] == keys.GROUP.encode()), b"0-0"
        )
        entries = await self.redis.xrange(stream, b"(" + last, "+", count=1)
        return entries[0] if entries else None
