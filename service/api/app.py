"""The FastAPI application: routes, middleware, and the error handlers.

Every error leaves as OpenAI's envelope `{"error": {message, type, param, code}}`
through `errors.to_error_response`; validation errors are 400 (OpenAI's status),
not FastAPI's 422; anything unexpected is a 500 with a generic message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__, errors
from service.api import console, ops, pacs_browse, render
from service.api.context import facts_of
from service.api.middleware import PUBLIC_PATHS, GatewayMiddleware
from service.api.protocol import ChatCompletionRequest, ChatCompletionResponse
from service.api.reads import router as reads_router
from service.api.responses_api.protocol import ResponseCreateRequest
from service.api.responses_api.routes import router as responses_router
from service.api.routes import router
from service.api.state import AppState

log = logging.getLogger("gmaivl.api")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(state: AppState, lifespan: Lifespan | None = None) -> FastAPI:
    app = FastAPI(title="GMAI-VL", version=__version__, lifespan=lifespan)
    app.state.gmaivl = state
    app.include_router(router)
    console_router = console.console_router(state.sign_in)
    for extra in (
        responses_router,
        reads_router,
        render.router,
        ops.router,
        pacs_browse.router,
        console_router,
    ):
        app.include_router(extra)  # after the chat routes: their matching stays first
    app.state.ops_windows = ops.OpsWindows(state)  # recent percentiles span from app start
    app.add_middleware(
        GatewayMiddleware,
        metrics=state.metrics,
        max_body_bytes=state.settings.max_body_bytes,
        body_timeout=state.settings.body_timeout,
        audit=state.audit,
        auth=state.auth,
        user_pseudonym_secret=state.settings.oidc.pseudonym_key(),
    )
    app.add_exception_handler(errors.ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    # uvicorn logs what reaches it with the exception's message; ours never reach it
    # (the middleware answers them), this holds for whatever else might, as for
    # asyncio's report of a task whose exception nobody retrieved.
    errors.redact_server_logs("uvicorn.error", "uvicorn.asgi", "asyncio")
    app.openapi = lambda: _openapi_with_request_models(app)  # type: ignore[method-assign]
    return app


def _openapi_with_request_models(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models that routes parse themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model_class in (ChatCompletionRequest, ChatCompletionResponse, ResponseCreateRequest):
            model = model_class.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model.pop("$defs", {}))
            components[model_class.__name__] = model
        # Every route outside the public ones takes `Authorization: Bearer <key>`.
        components_root = schema["components"]
        components_root["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if path not in PUBLIC_PATHS:
                    operation["security"] = [{"bearer": []}]
                # FastAPI documents its 422 for parsed bodies; ours answers those with 400.
                invalid = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(invalid):
                    del operation["responses"]["422"]
        app.openapi_schema = schema
    return app.openapi_schema


def error_json(exc: errors.ServiceError) -> JSONResponse:
    response = errors.to_error_response(exc)
    return JSONResponse(response.body, status_code=response.status_code, headers=response.headers)


def _note_outcome(request: Request, outcome: str) -> None:
    """The error's code on the request's audit event (when the route is audited)."""
    facts = facts_of(request)
    if facts is not None and facts.audit is not None:
        facts.audit.outcome = outcome


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ServiceError)
    _note_outcome(request, exc.code or exc.type)
    return error_json(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The deepest error: for a union (content: str | list of parts) pydantic reports every
    # branch, and the deepest one is the field the client actually got wrong. Among equally
    # deep ones, a branch the value had the type of (`stop`: five strings, "at most 4
    # items") says more than one it did not ("should be a valid string").
    first = max(
        exc.errors(),
        key=lambda e: (len(e.get("loc", ())), not str(e.get("type", "")).endswith("_type")),
        default={},
    )
    param = _param_path(first.get("loc", ()))
    # pydantic's `msg` never echoes the input (the `input` field does; we drop it: PHI).
    message = first.get("msg", "Invalid request.")
    if first.get("type") == "json_invalid":
        message, param = "The request body is not valid JSON.", None
    elif param:
        message = f"{message} (at {param})"
    _note_outcome(request, "invalid_request")
    return error_json(errors.InvalidRequest(message, param=param, code="invalid_request"))


_UNION_BRANCHES = frozenset({"str", "int", "float", "bool"})


def _param_path(loc: tuple[object, ...]) -> str | None:
    """pydantic's location as the field path a client sent: without the union branch
    names (`str`, `list[...]`, `tagged-union[...]`) and the discriminator value that
    repeats the field name (`image_url.image_url`)."""
    path: list[str] = []
    for part in (str(p) for p in loc):
        # union branches: `str`, `list[...]`, and model names (`WindowSpec`)
        if (
            part in ("body", "query")
            or "[" in part
            or part[:1].isupper()
            or (path and part == path[-1])
        ):
            continue
        if part in _UNION_BRANCHES:  # `stop.str`, `content.str`: the branch tried
            continue
        path.append(part)
    return ".".join(path) or None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = errors.error_body(str(exc.detail), "invalid_request_error", None, None)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    facts = facts_of(request)
    log.error(
        "unhandled error on request %s:\n%s",
        facts.request_id if facts is not None else "?",
        errors.redacted_traceback(exc),
    )
    _note_outcome(request, "server_error")
    return error_json(errors.ServiceError("Internal server error."))
