"""Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware): request ids,
body size limit, the per-request metrics, and the audit event of audited routes."""

from __future__ import annotations

import json
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.audit import AuditEvent, AuditSink
from service.metrics import ServiceMetrics, status_class

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/models", "/health/live", "/health/ready", "/metrics"}
)
AUDITED_ROUTES = frozenset({"/v1/chat/completions"})


def route_label(path: str) -> str:
    """A bounded metrics label: a known route, `/v1/models/{model}`, or `other`."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"  # never the raw model name
    return "other"


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-Id when it is a sane token, else a fresh one."""
    if header:
        value = header.decode("latin-1")
        if _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        model_id: str,
        max_body_bytes: int,
        audit: AuditSink | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.model_id = model_id
        self.max_body_bytes = max_body_bytes
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = request_id_from(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        scope["state"]["started"] = started
        status = 500
        route = route_label(scope["path"])
        in_flight = self.metrics.in_flight.labels(route)
        in_flight.inc()
        event: AuditEvent | None = None
        if self.audit is not None and route in AUDITED_ROUTES:
            event = AuditEvent(request_id=request_id, route=route, model=self.model_id)
            scope["state"]["audit"] = event

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(send_with_id)
                return
            await self.app(scope, self._capped(receive), send_with_id)
        except _BodyTooLarge:
            await self._too_large(send_with_id)
        finally:
            in_flight.dec()
            model = self.model_id if route.startswith("/v1/") else ""
            self.metrics.requests.labels(route, status_class(status), model).inc()
            elapsed = time.perf_counter() - started
            self.metrics.request_duration.labels(route, model).observe(elapsed)
            if event is not None and self.audit is not None:
                self._write_audit(self.audit, event, status, elapsed)

    @staticmethod
    def _write_audit(sink: AuditSink, event: AuditEvent, status: int, elapsed: float) -> None:
        event.status = status
        event.latency_ms = round(elapsed * 1000, 3)
        if status >= 400 and event.outcome == "ok":
            event.outcome = f"http_{status}"  # refused before a handler named the error
        sink.write(event)

    def _capped(self, receive: Receive) -> Receive:
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        return capped

    async def _too_large(self, send: Send) -> None:
        exc = errors.RequestTooLarge(
            f"The request body is larger than {self.max_body_bytes} bytes."
        )
        response = errors.to_error_response(exc)
        self.metrics.rejections.labels("request_too_large").inc()
        body = json.dumps(response.body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
