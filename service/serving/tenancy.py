"""A request's tenant policy, applied by the chat endpoint: what the tenant may ask
for (model, lane, images, max_tokens: refused with 403/400, retrying cannot help)
and how much (rate, tokens, concurrency: 429 with Retry-After, via the limiter)."""

from __future__ import annotations

from dataclasses import dataclass

from service import errors
from service.core.generation import Usage
from service.core.lanes import Lane
from service.metrics import ServiceMetrics
from service.security.limits import Lease, TenantLimiter
from service.security.policy import Principal
from service.serving.limits import check_image_count, check_max_tokens

HOLD_GRACE = 30.0  # a lease outlives its request's deadline by this much before it expires


@dataclass
class TenantCharge:
    """An admitted request's hold on its tenant's limits; release it exactly once."""

    limiter: TenantLimiter
    lease: Lease
    released: bool = False

    async def release(self, usage: Usage | None) -> None:
        if not self.released:
            self.released = True
            await self.limiter.release(self.lease, usage.total_tokens if usage else None)


class TenantGate:
    def __init__(self, limiter: TenantLimiter | None, metrics: ServiceMetrics) -> None:
        self.limiter = limiter
        self.metrics = metrics

    def check(
        self, principal: Principal | None, model: str, lane: Lane, max_tokens: int, images: int
    ) -> None:
        if principal is None:
            return
        policy = principal.policy
        try:
            if not policy.allows_model(model):
                raise errors.PermissionDenied(
                    "Your API key's tenant may not use this model.",
                    param="model",
                    code="model_not_allowed",
                )
            if not policy.allows_lane(lane):
                assert policy.max_priority is not None
                raise errors.PermissionDenied(
                    f"Your tenant may use priority {policy.max_priority.value} or lower.",
                    param="priority",
                    code="priority_not_allowed",
                )
            check_image_count(images, policy.max_images_per_request, param="messages", tenant=True)
            check_max_tokens(max_tokens, policy.tokens_per_minute, tenant=True)
        except errors.ServiceError as exc:
            self._count(principal, exc.code or "refused")
            raise

    async def admit(
        self, principal: Principal | None, max_tokens: int, seconds_left: float
    ) -> TenantCharge | None:
        if principal is None or self.limiter is None:
            return None
        try:
            lease = await self.limiter.acquire(
                principal.tenant, principal.policy, max_tokens, seconds_left + HOLD_GRACE
            )
        except errors.TenantLimitExceeded as exc:
            self._count(principal, exc.code or "tenant_limit")
            raise
        return TenantCharge(self.limiter, lease)

    def _count(self, principal: Principal, reason: str) -> None:
        self.metrics.rejections.labels(reason).inc()
        self.metrics.tenant_rejections.labels(principal.metric_label, reason).inc()
