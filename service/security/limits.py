"""Per-tenant rate and concurrency limits: one interface, two implementations.

    acquire(tenant, policy, tokens, hold)  -> Lease, or TenantLimitExceeded (429)
    release(lease, used_tokens)            -> frees the concurrency slot and
                                              corrects the token charge

Semantics (both implementations; tests/service/security/test_limits_contract.py):
- requests per minute: a sliding window of admitted requests; refused requests
  are not counted;
- tokens per minute: admission charges the request's `max_tokens`; release
  replaces that charge with the tokens really used (prompt + completion); a
  request is refused while the window's charges plus its own exceed the limit;
- concurrent requests: leases held; a lease expires after `hold` seconds even
  if never released (a gateway that died mid-request gives its slots back);
- all checks and the charge happen as one atomic step: two gateways never
  admit the same last slot;
- a refusal names the first limit hit and says when to retry (`Retry-After`,
  whole seconds, at least 1).

`InMemoryTenantLimiter` serves one process (the embedded default);
`RedisTenantLimiter` (`redis_limits`) is shared by every gateway on one Redis.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from service import errors
from service.security.policy import TenantPolicy

WINDOW_SECONDS = 60.0

LIMIT_NAMES = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "max_concurrent_requests": "concurrent requests",
}


@dataclass(frozen=True)
class Lease:
    id: str
    tenant: str
    tokens: int  # charged at admission


class TenantLimiter(Protocol):
    async def acquire(
        self, tenant: str, policy: TenantPolicy, tokens: int, hold: float
    ) -> Lease: ...

    async def release(self, lease: Lease, used_tokens: int | None) -> None: ...

    async def close(self) -> None: ...


def refusal(tenant_limit: str, limit: int, retry_after: float) -> errors.TenantLimitExceeded:
    """The 429 for a limit: its message names the limit, never the tenant's traffic."""
    return errors.TenantLimitExceeded(
        f"Rate limit reached for your tenant: {limit} {LIMIT_NAMES[tenant_limit]}. "
        "Retry after the time in the Retry-After header.",
        limit=tenant_limit,
        retry_after=max(1, math.ceil(retry_after)),
    )


@dataclass
class _TenantState:
    requests: deque[float] = field(default_factory=deque)  # admission times
    tokens: dict[str, tuple[float, int]] = field(default_factory=dict)  # lease -> (time, n)
    leases: dict[str, float] = field(default_factory=dict)  # lease -> expiry


class InMemoryTenantLimiter:
    """The in-process limiter. Each method runs without awaiting, so on one event
    loop it is atomic without a lock."""

    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self._tenants: dict[str, _TenantState] = {}

    async def acquire(self, tenant: str, policy: TenantPolicy, tokens: int, hold: float) -> Lease:
        now = self.clock()
        state = self._tenants.setdefault(tenant, _TenantState())
        horizon = now - self.window
        while state.requests and state.requests[0] <= horizon:
            state.requests.popleft()
        for lease_id in [k for k, (t, _) in state.tokens.items() if t <= horizon]:
            del state.tokens[lease_id]
        for lease_id in [k for k, expiry in state.leases.items() if expiry <= now]:
            del state.leases[lease_id]

        rpm = policy.requests_per_minute
        if rpm is not None and len(state.requests) + 1 > rpm:
            oldest = state.requests[0] if state.requests else now
            raise refusal("requests_per_minute", rpm, oldest + self.window - now)
        tpm = policy.tokens_per_minute
        if tpm is not None:
            charges = sorted(state.tokens.values())
            used = sum(n for _, n in charges)
            if used + tokens > tpm:
                wait = _tokens_free_in(charges, used + tokens - tpm, now, self.window)
                raise refusal("tokens_per_minute", tpm, wait)
        cap = policy.max_concurrent_requests
        if cap is not None and len(state.leases) + 1 > cap:
            raise refusal("max_concurrent_requests", cap, 1)

        lease = Lease(uuid.uuid4().hex, tenant, tokens)
        state.requests.append(now)
        state.tokens[lease.id] = (now, tokens)
        state.leases[lease.id] = now + hold
        return lease

    async def release(self, lease: Lease, used_tokens: int | None) -> None:
        state = self._tenants.get(lease.tenant)
        if state is None:
            return
        state.leases.pop(lease.id, None)
        if used_tokens is not None and lease.id in state.tokens:
            at, _ = state.tokens[lease.id]
            state.tokens[lease.id] = (at, used_tokens)

    async def close(self) -> None:
        self._tenants.clear()


def _tokens_free_in(
    charges: list[tuple[float, int]], excess: int, now: float, window: float
) -> float:
    """Seconds until enough of the oldest charges leave the window to admit `excess` more."""
    freed = 0
    for at, n in charges:
        freed += n
        if freed >= excess:
            return at + window - now
    return window  # the request alone is over the limit: a minute is the honest answer
