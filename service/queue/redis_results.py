"""Gateway side of the Redis result streams: one blocking XREAD for all of them.

A gateway answering N requests would otherwise hold N connections in blocking
reads and pay one wake-up and re-issue per stream per token. Here a single
reader task reads every open result stream of this process in one `XREAD`, and
hands each stream's entries to its waiting request. A request that starts while
the read is blocked wakes it through this gateway's control stream, so the next
read includes the new stream at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.queue import redis_keys as keys
from service.queue.base import JobEvent, JobFailed
from service.queue.codec import decode_event

log = logging.getLogger("gmaivl.queue")

UNAVAILABLE = JobFailed("NotReady", "The queue became unavailable; retry later.")


class _Subscription:
    __slots__ = ("buffer", "last", "waiter")

    def __init__(self) -> None:
        self.last = b"0-0"
        self.buffer: list[JobEvent] = []
        self.waiter: asyncio.Future[None] | None = None

    def push(self, events: list[JobEvent]) -> None:
        self.buffer.extend(events)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class ResultStreams:
    def __init__(self, redis: aioredis.Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self.control = keys.gateway_control(uuid.uuid4().hex[:12])
        self._control_last = b"$"
        self._subs: dict[str, _Subscription] = {}
        self._reader: asyncio.Task[None] | None = None
        self._woken = False

    async def open(self, job_id: str) -> None:
        self._subs[job_id] = _Subscription()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        elif not self._woken:  # the blocked read does not include this stream yet
            self._woken = True
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.control, {"w": b"1"}, maxlen=16, approximate=True)
                pipe.expire(self.control, self.ttl)
                await pipe.execute()

    def close(self, job_id: str) -> None:
        self._subs.pop(job_id, None)

    async def next_batch(self, job_id: str, timeout: float) -> list[JobEvent] | None:
        """The events that arrived for the job, waiting up to `timeout`; None on timeout."""
        sub = self._subs[job_id]
        if not sub.buffer:
            sub.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(sub.waiter), max(timeout, 0.001))
            except TimeoutError:
                return None
        batch, sub.buffer = sub.buffer, []
        return batch

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def _read_forever(self) -> None:
        while self._subs:
            streams = {self.control: self._control_last}
            streams.update({keys.result_stream(j): s.last for j, s in self._subs.items()})
            self._woken = False
            try:
                reply = await self.redis.xread(streams, count=1024, block=1000)
            except RedisError as exc:
                log.warning("result read failed: %s", type(exc).__name__)
                for sub in self._subs.values():
                    sub.push([UNAVAILABLE])
                await asyncio.sleep(0.2)
                continue
            for stream, entries in reply or []:
                name = stream.decode()
                if name == self.control:
                    self._control_last = entries[-1][0]
                    continue
                sub = self._subs.get(name.removeprefix(keys.result_stream("")))
                if sub is not None:
                    sub.last = entries[-1][0]
                    sub.push([decode_event(fields[b"e"]) for _, fields in entries])
