"""The worker's publisher when a flush fails. Redis is replaced by a stand-in that
holds a flush in flight and fails it on command: the order of events around a
failure cannot be arranged with a real server (the real one is in the queue's
contract and failover tests)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from service import errors
from service.core.generation import Delta
from service.redis.codec import decode_events
from service.redis.worker_io import InboxPublisher


class HeldRedis:
    """Each flush waits for `release`; the first one fails."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fail_next = True
        self.sent: list[tuple] = []

    async def pipeline(self, commands: list[tuple]) -> list:
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RedisConnectionError("gone")
        self.sent += commands
        return [None] * len(commands)


async def test_a_failed_flush_drops_what_was_queued_for_its_jobs_since():
    redis = HeldRedis()
    publisher = InboxPublisher(redis, ttl=60, flush_interval=0)  # type: ignore[arg-type]
    await publisher.publish("inbox", "j", Delta("a"))
    await asyncio.sleep(0.01)  # the flush carrying "a" is in flight (held)
    await publisher.publish("inbox", "j", Delta("b"))  # queued behind it
    await publisher.publish("inbox", "k", Delta("x"))  # another job's
    ack_j = asyncio.create_task(publisher.also("j", [("XACK", "lane", "g", "1-0")]))
    await asyncio.sleep(0.01)
    redis.release.set()  # the first flush fails; the next one goes through
    with pytest.raises(errors.NotReady):
        await ack_j  # "a" may be lost: j is never acknowledged
    await publisher.also("k", [("XACK", "lane", "g", "2-0")])
    events = [e for c in redis.sent if c[0] == "XADD" for e in decode_events(c[4])]
    assert events == [("k", Delta("x"))]  # no "b" after a lost "a": no gap in j's stream
    assert ("XACK", "lane", "g", "2-0") in redis.sent
    assert ("XACK", "lane", "g", "1-0") not in redis.sent
    with pytest.raises(errors.NotReady):
        await publisher.publish("inbox", "j", Delta("c"))
    publisher.forget("j")  # the worker gave the job up
    await publisher.publish("inbox", "j", Delta("c"))
    publisher.stop()
