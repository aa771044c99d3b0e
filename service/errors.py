"""The project's error tree and the one place errors become HTTP statuses.

    ServiceError                      (500, "server_error")
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── ImageTooLarge              413 (bytes or pixels over the limit)
    │   ├── ImageFetchFailed           400 (image URL refused, unreachable, slow, HTTP error)
    │   └── RequestTooLarge            413 (body over the limit)
    ├── RequestTimeout                 408 (the body did not arrive in time)
    ├── UnsupportedMediaType           415 (+ Accept-Encoding) a body in a content coding
    │                                      other than identity
    ├── UnprocessableImage             422 (decodes badly, truncated, wrong kind)
    ├── AuthenticationFailed           401 (+ WWW-Authenticate) bad/revoked key, refused token
    ├── PermissionDenied               403 (key or token valid; its tenant may not do this, no
    │                                      tenant for the token, a scope missing)
    ├── ModelNotFound                  404
    ├── NotFound                       404 (a study or read that does not exist; code names it)
    ├── Overloaded                     429 (+ Retry-After), queue full or rate
    │   └── TenantLimitExceeded        429 (+ Retry-After), a tenant limit; code names it
    ├── NotReady                       503 (model not loaded, no worker, no Redis primary)
    │   └── ModelUnavailable           503 (+ Retry-After) a known model without a live worker
    ├── PacsError                      502 (a configured PACS failed us; code: pacs_unavailable,
    │                                      pacs_error, sr_store_failed)
    ├── DeadlineExceeded               504 (expired in the queue or while running)
    ├── Cancelled                      499 (client went away; nobody reads it)
    └── EngineError                    500 (the engine failed on a valid request)

Foreign errors (PIL, pydicom, httpx, torch, transformers, redis) are converted where they are
caught, with `raise ... from exc`, so callers only ever see this tree.
Messages never contain request content (PHI stays out of errors).
"""

from __future__ import annotations

import functools
import logging
import traceback
from dataclasses import dataclass
from typing import Any


class ServiceError(Exception):
    status_code: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(ServiceError):
    status_code = 400
    type = "invalid_request_error"


class ImageTooLarge(InvalidRequest):
    status_code = 413
    code = "image_too_large"


class ImageFetchFailed(InvalidRequest):
    """The client's image URL could not be fetched: its fault (the URL), so a 4xx.
    `upstream_status` is the remote server's HTTP status when it answered one."""

    code = "image_fetch_failed"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        upstream_status: int | None = None,
    ):
        super().__init__(message, param=param, code=code)
        self.upstream_status = upstream_status


class RequestTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class UnprocessableImage(ServiceError):
    status_code = 422
    type = "invalid_request_error"
    code = "unprocessable_image"


class RequestTimeout(ServiceError):
    status_code = 408
    type = "invalid_request_error"
    code = "request_timeout"


class UnsupportedMediaType(ServiceError):
    """A request body in a content coding the server does not decode (RFC 9110 15.5.16):
    `accept_encoding` is sent back as Accept-Encoding."""

    status_code = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"

    def __init__(
        self,
        message: str,
        *,
        accept_encoding: str = "identity",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, param=param, code=code)
        self.accept_encoding = accept_encoding


class AuthenticationFailed(ServiceError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ServiceError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(ServiceError):
    status_code = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ServiceError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class Overloaded(ServiceError):
    status_code = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TenantLimitExceeded(Overloaded):
    """A tenant's own limit, not the server's load: `limit` names it (also in `code`)."""

    def __init__(self, message: str, *, limit: str, retry_after: int):
        super().__init__(message, retry_after=retry_after, code=f"tenant_{limit}")
        self.limit = limit


class NotReady(ServiceError):
    status_code = 503
    type = "server_error"
    code = "not_ready"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after  # sent as Retry-After when known


class ModelUnavailable(NotReady):
    """A model this deployment serves (configured, or seen lately) with no live worker."""

    code = "model_unavailable"


class PacsError(ServiceError):
    """A configured PACS was unreachable or answered an error: not the client's fault."""

    status_code = 502
    type = "server_error"
    code = "pacs_error"


class DeadlineExceeded(ServiceError):
    status_code = 504
    type = "timeout_error"
    code = "deadline_exceeded"


class Cancelled(ServiceError):
    status_code = 499
    type = "invalid_request_error"
    code = "cancelled"


class EngineError(ServiceError):
    status_code = 500
    type = "server_error"
    code = "engine_error"


# Codes that errors raised in workers carry besides their class's own (which are
# found by walking the tree): a failure crosses the queue as its code alone.
_WORKER_CODES: dict[str, type[ServiceError]] = {
    "invalid_request": InvalidRequest,
    "context_length_exceeded": InvalidRequest,
    "unsupported_response_format": InvalidRequest,
    "unsupported_parameter": InvalidRequest,
    "upstream_rejected": InvalidRequest,
    "worker_lost": NotReady,
    "dead_letter": EngineError,
}


def _classes(root: type[ServiceError]) -> list[type[ServiceError]]:
    return [root] + [c for sub in root.__subclasses__() for c in _classes(sub)]


@functools.cache
def _class_codes() -> dict[str, type[ServiceError]]:
    return {c.code: c for c in _classes(ServiceError) if c.code is not None}


def code_of(exc: ServiceError) -> str:
    """The code that identifies `exc` across the queue (its own, else its family's)."""
    if exc.code is not None:
        return exc.code
    return "invalid_request" if isinstance(exc, InvalidRequest) else "engine_error"


def error_for_code(
    code: str, message: str, param: str | None = None, retry_after: int | None = None
) -> ServiceError:
    """The exception a code stands for; an unknown code is an engine error that keeps it."""
    cls = _WORKER_CODES.get(code) or _class_codes().get(code, EngineError)
    if issubclass(cls, Overloaded):
        return Overloaded(message, retry_after=retry_after or 1, code=code)
    if issubclass(cls, NotReady):
        return cls(message, param=param, code=code, retry_after=retry_after)
    return cls(message, param=param, code=code)


@dataclass(frozen=True)
class ErrorResponse:
    """An error as the HTTP layer sends it: status, OpenAI body, extra headers."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def to_error_response(exc: ServiceError) -> ErrorResponse:
    """The single mapping from our errors to statuses, bodies and headers."""
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded | NotReady) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, AuthenticationFailed):
        # RFC 6750: a refused access token says so (a client renews); keys get the bare scheme.
        token = exc.code in ("invalid_token", "token_expired")
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if token else "Bearer"
    if isinstance(exc, UnsupportedMediaType):
        headers["Accept-Encoding"] = exc.accept_encoding
    return ErrorResponse(
        status_code=exc.status_code,
        body=error_body(exc.message, exc.type, exc.param, exc.code),
        headers=headers,
    )


def redacted_traceback(exc: BaseException) -> str:
    """Where an exception happened, without its message: messages of foreign errors
    may quote request content (PHI), frames never do."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"{frames}{type(exc).__module__}.{type(exc).__qualname__} (message withheld)"


class RedactExceptions(logging.Filter):
    """A log filter that keeps a record's traceback and drops its exception message:
    installed on servers' loggers (uvicorn's), which log what reaches them in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}\n{redacted_traceback(exc)}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def redact_server_logs(*names: str) -> None:
    """Install `RedactExceptions` on the named loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactExceptions) for f in logger.filters):
            logger.addFilter(RedactExceptions())
