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
    """Each pipeline's execute waits for `release`; the first one fails."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fail_next = True
        self.sent: list[tuple] = []

    def pipeline(self, transaction: bool = True) -> HeldPipeline:
        return HeldPipeline(self)


class HeldPipeline:
    def __init__(self, redis: HeldRedis) -> None:
        self.redis = redis
        self.commands: list[tuple] = []

    async def __aenter__(self) -> HeldPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def xadd(self, key: str, fields: dict) -> None:
        self.commands.append(("xadd", key, decode_events(fields["e"])))

    def expire(self, key: str, ttl: int) -> None:
        self.commands.append(("expire", key))

    def xack(self, *args: object) -> None:
        self.commands.append(("xack", *args))

    async def execute(self) -> list:
        await self.redis.release.wait()
        if self.redis.fail_next:
            self.redis.fail_next = False
            raise RedisConnectionError("gone")
        self.redis.sent += self.commands
        return [None] * len(self.commands)


async def test_a_failed_flush_drops_what_was_queued_for_its_jobs_since():
    redis = HeldRedis()
    publisher = InboxPublisher(redis, ttl=60, flush_interval=0)  # type: ignore[arg-type]
    await publisher.publish("inbox", "j", Delta("a"))
    await asyncio.sleep(0.01)  # the flush carrying "a" is in flight (held)
    await publisher.publish("inbox", "j", Delta("b"))  # queued behind it
    await publisher.publish("inbox", "k", Delta("x"))  # another job's
    ack_j = asyncio.create_task(publisher.also("j", lambda pipe: pipe.xack("lane", "g", "1-0")))
    await asyncio.sleep(0.01)
    redis.release.set()  # the first flush fails; the next one goes through
    with pytest.raises(errors.NotReady):
        await ack_j  # "a" may be lost: j is never acknowledged
    await publisher.also("k", lambda pipe: pipe.xack("lane", "g", "2-0"))
    events = [e for command in redis.sent if command[0] == "xadd" for e in command[2]]
    assert events == [("k", Delta("x"))]  # no "b" after a lost "a": no gap in j's stream
    assert ("xack", "lane", "g", "2-0") in redis.sent
    assert ("xack", "lane", "g", "1-0") not in redis.sent
    with pytest.raises(errors.NotReady):
        await publisher.publish("inbox", "j", Delta("c"))
    publisher.forget("j")  # the worker gave the job up
    await publisher.publish("inbox", "j", Delta("c"))
    publisher.stop()
