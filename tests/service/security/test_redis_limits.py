"""What only the Redis limiter has: several gateways (here: clients) share one count,
and a Redis that cannot be reached fails closed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service import errors
from service.redis.tenant_limits import RedisTenantLimiter
from service.security.policy import TenantPolicy


async def test_two_limiters_on_one_redis_share_the_allowance(redis_server):
    gateways = [RedisTenantLimiter(redis_server.url) for _ in range(2)]
    name, policy = f"t-{uuid.uuid4().hex[:8]}", TenantPolicy(requests_per_minute=30)
    try:
        results = await asyncio.gather(
            *(gateways[i % 2].acquire(name, policy, 1, 30) for i in range(50)),
            return_exceptions=True,
        )
    finally:
        for limiter in gateways:
            await limiter.close()
    assert sum(not isinstance(r, BaseException) for r in results) == 30


async def test_unreachable_redis_fails_closed():
    limiter = RedisTenantLimiter("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(errors.NotReady):
            await limiter.acquire("t", TenantPolicy(requests_per_minute=1), 1, 30)
    finally:
        await limiter.close()
