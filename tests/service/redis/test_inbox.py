"""The gateway's inbox against a real redis-server: the last look at a deadline, and
no event dispatched twice when it and the reader both read an entry."""

from __future__ import annotations

import redis.asyncio as aioredis

from service.core.generation import Delta, Finish, Usage
from service.redis.codec import encode_events
from service.redis.inbox import GatewayInbox
from service.redis.multiplexed import MultiplexedRedis


async def test_the_last_look_finds_what_the_reader_has_not_read_yet(redis_server):
    redis = aioredis.Redis.from_url(redis_server.url)
    shared = MultiplexedRedis(redis)
    inbox = GatewayInbox(redis, shared, ttl=60)
    try:
        inbox.open("job")
        # A worker's flush lands; no reader has run yet (the request is at its deadline).
        finish = Finish("stop", Usage(1, 1))
        await redis.xadd(inbox.key, {"e": encode_events([("job", Delta("a")), ("job", finish)])})
        assert await inbox.last_look("job") == [Delta("a"), finish]
        assert await inbox.last_look("job") is None  # read once
        # The reader, started now, reads from the same point: nothing twice.
        assert await inbox.next_batch("job", 0.3) is None
        await redis.xadd(inbox.key, {"e": encode_events([("job", Delta("b"))])})
        assert await inbox.next_batch("job", 5) == [Delta("b")]
    finally:
        inbox.close("job")
        await inbox.stop()
        await shared.close()
        await redis.aclose()
