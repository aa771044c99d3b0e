"""Tenants and what they may do: a policy per tenant, a principal per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.core.lanes import Lane
from service.security.identity import Identity


@dataclass(frozen=True)
class TenantPolicy:
    """Limits of one tenant; `None` means no limit of that kind.

    Rates are over a sliding minute. Tokens are charged `max_tokens` when a
    request is admitted and corrected to prompt + completion tokens when it ends.
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    max_priority: Lane | None = None  # the highest lane its requests may use
    max_images_per_request: int | None = None
    models: tuple[str, ...] | None = None  # model ids it may use; None: all

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TenantPolicy:
        known = {
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent_requests",
            "max_priority",
            "max_images_per_request",
            "models",
        }
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown tenant policy fields: {', '.join(sorted(unknown))}")
        for name in known - {"max_priority", "models"}:
            value = raw.get(name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer")
        models = raw.get("models")
        return cls(
            requests_per_minute=raw.get("requests_per_minute"),
            tokens_per_minute=raw.get("tokens_per_minute"),
            max_concurrent_requests=raw.get("max_concurrent_requests"),
            max_priority=Lane(raw["max_priority"]) if raw.get("max_priority") else None,
            max_images_per_request=raw.get("max_images_per_request"),
            models=tuple(models) if models is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in (
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent_requests",
            "max_images_per_request",
        ):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.max_priority is not None:
            out["max_priority"] = self.max_priority.value
        if self.models is not None:
            out["models"] = list(self.models)
        return out

    def allows_lane(self, lane: Lane) -> bool:
        return self.max_priority is None or lane.rank >= self.max_priority.rank

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models


UNLIMITED = TenantPolicy()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's public id (never the key), or a user's verified
    identity (a bearer access token from the IdP), and the tenant either maps to."""

    key_id: str | None
    tenant: str
    policy: TenantPolicy
    metric_label: str  # the tenant id, or "other" past the configured label budget
    identity: Identity | None = None  # set when a token, not a key, authenticated
