"""A request's typed facts, as the middleware left them on the ASGI scope
(`serving.context.RequestFacts`), and the `RequestContext` a handler hands on."""

from __future__ import annotations

from starlette.requests import Request

from service.serving.context import FACTS, RequestContext, RequestFacts


def facts_of(request: Request) -> RequestFacts | None:
    """None only outside the middleware (an app built without it)."""
    facts = request.scope.get("state", {}).get(FACTS)
    return facts if isinstance(facts, RequestFacts) else None


def context_of(request: Request) -> RequestContext:
    """The request's facts plus its X-Priority and X-Request-Timeout headers."""
    facts = facts_of(request)
    if facts is None:
        raise RuntimeError("a route ran without GatewayMiddleware")
    return RequestContext.of(
        facts, request.headers.get("x-priority"), request.headers.get("x-request-timeout")
    )
