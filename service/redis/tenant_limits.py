"""Per-tenant limits in Redis, shared by every gateway replica: one Lua call to
admit (check + charge, atomically), one to release. Semantics: `limits`."""

from __future__ import annotations

import contextlib
import uuid

from redis.exceptions import RedisError

from service.redis import keys
from service.redis.connection import close_quietly, connect, unavailable
from service.redis.scripts import TENANT_ACQUIRE_SCRIPT, TENANT_RELEASE_SCRIPT
from service.security.limits import WINDOW_SECONDS, Lease, refusal
from service.security.policy import TenantPolicy


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisTenantLimiter:
    def __init__(self, url: str, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self.redis = connect(url)
        self._acquire = self.redis.register_script(TENANT_ACQUIRE_SCRIPT)
        self._release = self.redis.register_script(TENANT_RELEASE_SCRIPT)

    async def acquire(self, tenant: str, policy: TenantPolicy, tokens: int, hold: float) -> Lease:
        lease = Lease(uuid.uuid4().hex, tenant, tokens)
        # Fail closed: without the shared counters no gateway can enforce a limit.
        with unavailable("Rate limiting is unavailable; retry shortly."):
            reply = await self._acquire(
                keys=[
                    keys.tenant_requests(tenant),
                    keys.tenant_tokens(tenant),
                    keys.tenant_leases(tenant),
                ],
                args=[
                    self.window,
                    _limit(policy.requests_per_minute),
                    _limit(policy.tokens_per_minute),
                    _limit(policy.max_concurrent_requests),
                    tokens,
                    hold,
                    lease.id,
                ],
            )
        name = reply[0].decode()
        if name == "ok":
            return lease
        limit = {
            "requests_per_minute": policy.requests_per_minute,
            "tokens_per_minute": policy.tokens_per_minute,
            "max_concurrent_requests": policy.max_concurrent_requests,
        }[name]
        raise refusal(name, limit or 0, float(reply[1]))

    async def release(self, lease: Lease, used_tokens: int | None) -> None:
        # On a Redis error the lease expires by itself and the charge stays at max_tokens.
        with contextlib.suppress(RedisError):
            await self._release(
                keys=[keys.tenant_tokens(lease.tenant), keys.tenant_leases(lease.tenant)],
                args=[lease.id, lease.tokens, -1 if used_tokens is None else used_tokens],
            )

    async def close(self) -> None:
        await close_quietly(self.redis)
