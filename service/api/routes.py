"""Routes: thin. Parse, hand to the serving object, shape the HTTP response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from service import errors
from service.api.context import context_of
from service.api.disconnect import ClientWatch
from service.api.protocol import ChatCompletionRequest, ErrorBody
from service.api.request_limits import check_json_depth
from service.api.sse import EventStreamResponse
from service.api.state import AppState
from service.queue.protocols import ModelSeen

router = APIRouter()

LARGE_BODY = 1 << 20
M = TypeVar("M", bound=BaseModel)


def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    """The error statuses a route documents, all with OpenAI's error body."""
    return {status: {"model": ErrorBody} for status in statuses}


AUTH_ERRORS = _errors(401, 404, 408, 413)
CHAT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "A chat.completion object, or with stream=true an event stream",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionResponse"}},
            # events: `data:` lines of chunk objects, then `[DONE]`
            "text/event-stream": {"schema": {}},
        },
    },
    **_errors(400, 401, 403, 404, 408, 413, 415, 422, 429, 499, 500, 503, 504),
}


def _state(request: Request) -> AppState:
    return request.app.state.gmaivl


async def parsed_body(request: Request, model: type[M]) -> M:
    """The request body as `model`. Parsed by pydantic-core straight from bytes rather
    than through FastAPI's body dependency: about a third of the gateway's per-request
    cost (docs/benchmarks.md); `app.py` puts the schema into the OpenAPI document."""
    try:
        raw = await request.body()
    except ClientDisconnect:  # gone before its body arrived: nobody to answer, nothing broke
        raise errors.Cancelled("The client went away before its request arrived.") from None
    depth = _state(request).settings.max_json_depth
    if len(raw) > LARGE_BODY:  # the depth scan of a big body runs beside the event loop
        await asyncio.to_thread(check_json_depth, raw, depth)
    else:
        check_json_depth(raw, depth)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None


CHAT_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
    },
}


@router.post(
    "/v1/chat/completions",
    openapi_extra={"requestBody": CHAT_REQUEST_BODY},
    responses=CHAT_RESPONSES,
)
async def chat_completions(request: Request) -> Response:
    state = _state(request)
    body = await parsed_body(request, ChatCompletionRequest)
    ctx = context_of(request)
    return await answered(request, lambda watch: state.chat.create(body, ctx, watch))


Answer = dict[str, Any] | AsyncGenerator[str, None]


async def answered(
    request: Request, create: Callable[[ClientWatch], Awaitable[Answer]]
) -> Response:
    """`create`'s answer under the request's ClientWatch: JSON, or an event stream
    (which closes the watch when it ends)."""
    watch = ClientWatch(request.receive).start()
    try:
        result = await create(watch)
    except BaseException:
        watch.close()
        raise
    if isinstance(result, dict):
        watch.close()
        return JSONResponse(result)
    return EventStreamResponse(result, watch)


def _model_card(state: AppState, model: ModelSeen) -> dict[str, object]:
    card: dict[str, object] = {
        "id": model.id,
        "object": "model",
        "created": state.created,
        "owned_by": "gmai-vl",
    }
    if model.parent is not None:  # a LoRA adapter: vLLM's field for its base
        card["parent"] = model.parent
    return card


def _visible(request: Request, model: str) -> bool:
    """Models a caller's tenant may not use are not shown to it either."""
    principal = context_of(request).principal
    return principal is None or principal.policy.allows_model(model)


@router.get("/v1/models", responses=AUTH_ERRORS)
async def list_models(request: Request) -> dict[str, object]:
    state = _state(request)
    return {
        "object": "list",
        "data": [
            _model_card(state, model)
            for model in await state.models.live()
            if _visible(request, model.id)
        ],
    }


@router.get("/v1/models/{model:path}", responses=AUTH_ERRORS)
async def retrieve_model(model: str, request: Request) -> dict[str, object]:
    state = _state(request)
    live = {m.id: m for m in await state.models.live()}
    if model not in live or not _visible(request, model):
        raise errors.ModelNotFound("The requested model does not exist.", param="model")
    return _model_card(state, live[model])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "Not ready"}})
async def ready(request: Request) -> JSONResponse:
    checks = await _state(request).readiness()
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks, "time": int(time.time())},
        status_code=200 if ok else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    state = _state(request)
    queue = state.queue
    for model in await state.models.snapshot():
        state.metrics.set_queue_state(
            model,
            await queue.depths(model),
            await queue.oldest_ages(model),
            await queue.live_workers(model),
        )
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
