"""A request's facts, typed: what the middleware learns (`RequestFacts`, one object
on the ASGI scope) and what a handler hands to a service (`RequestContext`).

No HTTP types here: the DICOM node builds a `RequestContext` as the API does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from service import errors
from service.audit import AuditEvent
from service.config import Settings
from service.core.lanes import Lane
from service.security.identity import Identity
from service.security.policy import Principal

# The ASGI scope's state key of a request's `RequestFacts`.
FACTS = "gmaivl.request"

_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


@dataclass
class ServedModel:
    """The model a request asked for, once the catalog knows it (so a bounded name, never
    one a client made up): the id the response's `model` names, and the base model when
    that id is a LoRA adapter. The middleware makes one per request; `check` fills it;
    the request's metrics and audit event read it (None: the request named no known model)."""

    id: str | None = None
    parent: str | None = None


@dataclass
class RequestFacts:
    """Filled in by the middleware as it learns them (id and arrival first, then the
    audit event and the authenticated caller)."""

    request_id: str
    started: float  # time.perf_counter() at arrival
    audit: AuditEvent | None = None  # filled in as the request is served
    principal: Principal | None = None  # the caller's key and tenant; None: auth off
    served: ServedModel = field(default_factory=ServedModel)  # the model asked for


@dataclass(frozen=True)
class RequestContext:
    """What a service knows about a request besides its body."""

    request_id: str
    priority: str | None  # X-Priority header
    timeout: str | None  # X-Request-Timeout header, seconds
    started: float  # time.perf_counter() at arrival
    audit: AuditEvent | None = None  # filled in as the request is served
    principal: Principal | None = None  # the caller's key and tenant; None: auth off
    served: ServedModel | None = None  # the model asked for, for the metrics and the audit

    @classmethod
    def of(
        cls, facts: RequestFacts, priority: str | None = None, timeout: str | None = None
    ) -> RequestContext:
        return cls(
            request_id=facts.request_id,
            priority=priority,
            timeout=timeout,
            started=facts.started,
            audit=facts.audit,
            principal=facts.principal,
            served=facts.served,
        )

    @property
    def tenant(self) -> str | None:
        return self.principal.tenant if self.principal is not None else None

    @property
    def identity(self) -> Identity | None:
        """The user (sub, iss, scopes) when an IdP's access token authenticated the
        request; None for an API key or with auth off. A store that keeps things per
        user (stored responses) keys them by (identity.iss, identity.sub)."""
        return self.principal.identity if self.principal is not None else None


def lane_from_header(header: str | None, default: Lane) -> Lane:
    """The X-Priority header's lane (any case), else the default lane."""
    if header is None:
        return default
    try:
        return Lane(header.strip().lower())
    except ValueError as exc:
        raise errors.InvalidRequest(
            "X-Priority must be one of: " + ", ".join(lane.value for lane in Lane) + ".",
            param="X-Priority",
            code="invalid_priority",
        ) from exc


def timeout_of(header: str | None, settings: Settings) -> float:
    """Seconds the request may take: X-Request-Timeout within bounds, else the default."""
    if header is None:
        return settings.request_timeout
    # A plain decimal only: float() would also take "1_0", "inf" and "nan".
    seconds = float(header) if _SECONDS.fullmatch(header.strip()) else -1.0
    if not 0 < seconds <= settings.max_request_timeout:
        raise errors.InvalidRequest(
            "X-Request-Timeout must be a number of seconds in (0, "
            f"{settings.max_request_timeout:g}].",
            param="X-Request-Timeout",
            code="invalid_timeout",
        )
    return seconds
