"""The tenant-limit contract, run against both limiters: in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service import errors
from service.redis.tenant_limits import RedisTenantLimiter
from service.security.limits import InMemoryTenantLimiter
from service.security.policy import TenantPolicy

WINDOW = 0.6  # seconds: short, so expiry is tested without waiting a minute


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request):
    made = []

    def make(window: float = WINDOW):
        if request.param == "memory":
            return InMemoryTenantLimiter(window=window)
        limiter = RedisTenantLimiter(request.getfixturevalue("redis_server").url, window=window)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def refused(limiter, name, policy, tokens=1, hold=30.0) -> errors.TenantLimitExceeded:
    with pytest.raises(errors.TenantLimitExceeded) as info:
        await limiter.acquire(name, policy, tokens, hold)
    return info.value


async def test_requests_per_minute_admits_exactly_the_allowance(make_limiter):
    limiter, name = make_limiter(window=60), tenant()
    policy = TenantPolicy(requests_per_minute=5)
    for _ in range(5):
        await limiter.acquire(name, policy, 1, 30)
    exc = await refused(limiter, name, policy)
    assert exc.limit == "requests_per_minute" and exc.code == "tenant_requests_per_minute"
    assert "5 requests per minute" in exc.message
    assert 55 <= exc.retry_after <= 60  # when the oldest admission leaves the window


async def test_refused_requests_are_not_counted_and_the_window_slides(make_limiter):
    limiter, name = make_limiter(), tenant()
    policy = TenantPolicy(requests_per_minute=2)
    await limiter.acquire(name, policy, 1, 30)
    await limiter.acquire(name, policy, 1, 30)
    for _ in range(3):
        await refused(limiter, name, policy)
    await asyncio.sleep(WINDOW + 0.05)
    await limiter.acquire(name, policy, 1, 30)
    await limiter.acquire(name, policy, 1, 30)  # the refusals took no slot


async def test_tenants_do_not_share_limits(make_limiter):
    limiter = make_limiter(window=60)
    policy = TenantPolicy(requests_per_minute=1)
    first, second = tenant(), tenant()
    await limiter.acquire(first, policy, 1, 30)
    await refused(limiter, first, policy)
    await limiter.acquire(second, policy, 1, 30)


async def test_tokens_are_charged_up_front_and_corrected_on_release(make_limiter):
    limiter, name = make_limiter(window=60), tenant()
    policy = TenantPolicy(tokens_per_minute=100)
    big = await limiter.acquire(name, policy, 80, 30)
    exc = await refused(limiter, name, policy, tokens=30)
    assert exc.limit == "tokens_per_minute" and "100 tokens per minute" in exc.message
    await limiter.release(big, used_tokens=20)  # it used 20 of the 80 it reserved
    await limiter.acquire(name, policy, 30, 30)
    await limiter.acquire(name, policy, 50, 30)  # 20 + 30 + 50 = 100: still within
    await refused(limiter, name, policy, tokens=1)


async def test_concurrency_is_held_until_release(make_limiter):
    limiter, name = make_limiter(window=60), tenant()
    policy = TenantPolicy(max_concurrent_requests=2)
    a = await limiter.acquire(name, policy, 1, 30)
    await limiter.acquire(name, policy, 1, 30)
    exc = await refused(limiter, name, policy)
    assert exc.limit == "max_concurrent_requests" and exc.retry_after >= 1
    await limiter.release(a, used_tokens=None)
    await limiter.acquire(name, policy, 1, 30)


async def test_a_lease_never_released_expires(make_limiter):
    limiter, name = make_limiter(window=60), tenant()
    policy = TenantPolicy(max_concurrent_requests=1)
    await limiter.acquire(name, policy, 1, hold=0.3)  # its gateway died: no release
    await refused(limiter, name, policy)
    await asyncio.sleep(0.4)
    await limiter.acquire(name, policy, 1, 30)


async def test_no_limits_means_no_refusals(make_limiter):
    limiter, name = make_limiter(window=60), tenant()
    leases = [await limiter.acquire(name, TenantPolicy(), 10_000, 30) for _ in range(50)]
    for lease in leases:
        await limiter.release(lease, used_tokens=5)


async def test_concurrent_acquires_admit_exactly_the_allowance(make_limiter):
    limiter, name = make_limiter(window=60), tenant()
    policy = TenantPolicy(requests_per_minute=10)
    results = await asyncio.gather(
        *(limiter.acquire(name, policy, 1, 30) for _ in range(25)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert len(admitted) == 10
    assert all(isinstance(r, errors.TenantLimitExceeded) for r in results if r not in admitted)
