"""Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware): request ids,
authentication, the body's content coding (identity only: 415), its size and arrival-time
limits, the per-request metrics, and one audit event per request (allowed or refused)
outside the public routes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors, tracing
from service.api.console import CONSOLE_PATHS
from service.api.sse import BODY_SEND
from service.audit import AuditEvent, AuditSink
from service.metrics import ServiceMetrics, status_class
from service.security.authenticate import Authenticator, UserRefused
from service.security.policy import Principal
from service.serving.context import FACTS, RequestFacts

log = logging.getLogger("gmaivl.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
USER_ATTRIBUTE = "gmaivl.user.pseudonym"  # HMAC-SHA256(secret, iss NUL sub), docs/security.md


ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/models",
        "/v1/dicom/reads",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/v1/images/render",
        "/v1/ops/stats",
        "/v1/dicom/pacs",
        "/v1/dicom/studies",
    }
)
# Open without a key: probes, scrapes, the API description and the console's static
# files (docs/console.md). They reveal nothing about patients or tenants, and are
# not audited (they would drown the trail).
PUBLIC_PATHS = frozenset(
    {"/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
    | CONSOLE_PATHS
)


def route_label(path: str) -> str:
    """A bounded metrics label: a known route, `/v1/models/{model}`, or `other`."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"  # never the raw model name
    if path.startswith("/v1/dicom/studies/"):  # never a UID
        return "/v1/dicom/studies/{study}/..."
    if path in CONSOLE_PATHS:
        return "/ui/"
    if path.startswith("/v1/responses/"):  # never the id
        tail = path.rsplit("/", 1)[-1]
        return (
            "/v1/responses/{id}/" + tail
            if tail in ("cancel", "input_items")
            else "/v1/responses/{id}"
        )
    if path.startswith("/v1/dicom/reads/"):
        return "/v1/dicom/reads/{id}/sr" if path.endswith("/sr") else "/v1/dicom/reads/{id}"
    return "other"


# Request bodies are read as sent: no content coding is decoded (a gzip body would
# be parsed as bad JSON, a `br` one as garbage), so every coding but identity is
# refused, as RFC 9110 says, naming what is accepted (docs/api.md).
ACCEPTED_ENCODING = "identity"
UNSUPPORTED_ENCODING = errors.UnsupportedMediaType(
    "The request body's Content-Encoding is not supported; send it uncompressed.",
    accept_encoding=ACCEPTED_ENCODING,
)


def identity_coded(headers: list[tuple[bytes, bytes]]) -> bool:
    """Every Content-Encoding header (there may be several) lists identity only."""
    for name, value in headers:
        if name.lower() == b"content-encoding":
            for coding in value.split(b","):
                if coding.strip().lower() not in (b"", ACCEPTED_ENCODING.encode()):
                    return False
    return True


def route_family(path: str) -> str | None:
    """Which family a route belongs to, for a scope the IdP's tokens must carry
    (GMAIVL_OIDC_REQUIRED_SCOPES): chat, reads, pacs, ops."""
    if path.startswith("/v1/dicom/reads"):
        return "reads"
    if path.startswith(("/v1/dicom/studies", "/v1/dicom/pacs")):
        return "pacs"
    if path.startswith("/v1/ops/"):
        return "ops"
    if path.startswith(("/v1/chat/", "/v1/responses", "/v1/models", "/v1/images/")):
        return "chat"
    return None


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-Id when it is a sane token, else a fresh one."""
    if header:
        value = header.decode("latin-1")
        if _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


@dataclass(eq=False)
class GatewayMiddleware:
    """Wraps `app` (Starlette's `add_middleware` passes the rest as keywords);
    `user_pseudonym_secret` is the HMAC key of the trace attribute."""

    app: ASGIApp
    metrics: ServiceMetrics
    max_body_bytes: int
    body_timeout: float = 30.0
    audit: AuditSink | None = None
    auth: Authenticator | None = None
    user_pseudonym_secret: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = request_id_from(headers.get(b"x-request-id"))
        started = time.perf_counter()
        facts = RequestFacts(request_id, started)  # typed; routes read it (api/context.py)
        scope.setdefault("state", {})[FACTS] = facts
        scope[BODY_SEND] = send  # a stream's body chunks skip the wrappers below (api/sse.py)
        status = 500
        route = route_label(scope["path"])
        in_flight = self.metrics.in_flight.labels(route)
        in_flight.inc()
        public = scope["path"] in PUBLIC_PATHS
        # The model the request asked for, once the catalog knows it (api/models.py):
        # the metrics' `model` label and the audit event's, as the response's `model`.
        served = facts.served
        event: AuditEvent | None = None
        if self.audit is not None and not public:
            event = AuditEvent(request_id=request_id, route=route)
            facts.audit = event

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        principal: Principal | None = None
        try:
            if self.auth is not None and not public:
                try:
                    principal = await self.auth.authenticate(
                        headers.get(b"authorization"),
                        scope.get("query_string", b""),
                        route_family(scope["path"]),
                    )
                except errors.ServiceError as exc:  # 401, 403 for a user, 503 IdP unknown
                    if event is not None and isinstance(exc, UserRefused):
                        event.sub, event.iss = exc.identity.sub, exc.identity.iss  # who was refused
                    await self._reject(send_with_id, event, exc)
                    return
                facts.principal = principal
                if event is not None:
                    event.key_id, event.tenant = principal.key_id, principal.tenant
                    if principal.identity is not None:
                        event.sub, event.iss = principal.identity.sub, principal.identity.iss
            if not identity_coded(scope["headers"]):
                await self._reject(send_with_id, event, UNSUPPORTED_ENCODING)
                return
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(send_with_id, event)
                return
            if tracing.enabled() and not public:
                await self._traced(
                    scope, headers, request_id, route, event, principal, send_with_id, receive
                )
            else:
                await self.app(scope, self._capped(receive), send_with_id)
        except _BodyTooLarge:
            await self._too_large(send_with_id, event)
        except _BodyTooSlow:
            exc = errors.RequestTimeout(
                f"The request body did not arrive within {self.body_timeout:g} seconds."
            )
            await self._reject(send_with_id, event, exc)
        except Exception as exc:  # the last line: nothing unexpected leaves
            # Handled here rather than re-raised: Starlette's outermost middleware would
            # re-raise it to the server, which logs the message (it may quote input).
            log.error(
                "unhandled error on request %s:\n%s", request_id, errors.redacted_traceback(exc)
            )
            if event is not None:
                event.outcome = "server_error"
            if not started_response:
                await self._refuse(send_with_id, errors.ServiceError("Internal server error."))
        finally:
            in_flight.dec()
            model = served.id or ""
            self.metrics.requests.labels(route, status_class(status), model).inc()
            elapsed = time.perf_counter() - started
            self.metrics.request_duration.labels(route, model).observe(elapsed)
            if event is not None and self.audit is not None:
                event.model, event.parent = served.id, served.parent
                self._write_audit(self.audit, event, status, elapsed)

    async def _traced(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        request_id: str,
        route: str,
        event: AuditEvent | None,
        principal: Principal | None,
        send: Send,
        receive: Receive,
    ) -> None:
        """The app inside the request's span, joined to the client's traceparent. A user
        appears only as a keyed pseudonym (HMAC of iss and sub), never in clear."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        name = f"{scope['method']} {route}"
        attributes = {"http.request.method": scope["method"], "http.route": route}
        identity = principal.identity if principal is not None else None
        if identity is not None and self.user_pseudonym_secret is not None:
            attributes[USER_ATTRIBUTE] = identity.pseudonym(self.user_pseudonym_secret)
        with (
            tracing.incoming(headers, request_id),
            tracing.span(name, attributes, kind=SpanKind.SERVER) as span,
        ):
            if event is not None:
                event.trace_id = tracing.current_trace_id()
            try:
                await self.app(scope, self._capped(receive), send_status)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    @staticmethod
    def _write_audit(sink: AuditSink, event: AuditEvent, status: int, elapsed: float) -> None:
        event.status = status
        event.latency_ms = round(elapsed * 1000, 3)
        if status >= 400 and event.outcome == "ok":
            event.outcome = f"http_{status}"  # refused before a handler named the error
        sink.write(event)

    def _capped(self, receive: Receive) -> Receive:
        """`receive` with the body's size capped and its arrival bounded in time (a
        client trickling bytes holds a connection, not the server). Once the body is
        complete, receiving is unbounded again: that is the disconnect watch."""
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def capped() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
                complete = not message.get("more_body", False)
            return message

        return capped

    async def _too_large(self, send: Send, event: AuditEvent | None) -> None:
        limit = self.max_body_bytes
        exc = errors.RequestTooLarge(f"The request body is larger than {limit} bytes.")
        await self._reject(send, event, exc)

    async def _reject(self, send: Send, event: AuditEvent | None, exc: errors.ServiceError) -> None:
        """Refused before the app: counted by its code, on the audit event, answered."""
        code = errors.code_of(exc)
        self.metrics.rejections.labels(code).inc()
        if event is not None:
            event.outcome = code
        await self._refuse(send, exc)

    @staticmethod
    async def _refuse(send: Send, exc: errors.ServiceError) -> None:
        response = errors.to_error_response(exc)
        body = json.dumps(response.body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in response.headers.items()),
        ]
        start = {"type": "http.response.start", "status": response.status_code, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass
