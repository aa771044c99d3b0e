"""Routes of the Responses API: thin. Parse, hand to `ResponsesService`, shape the answer."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from service import errors
from service.api.context import context_of
from service.api.protocol import ErrorBody
from service.api.responses_api.protocol import ResponseCreateRequest
from service.api.responses_api.serving import ResponsesService, viewer_of
from service.api.routes import answered, parsed_body

router = APIRouter()

_ERRORS = (400, 401, 403, 404, 408, 413, 422, 429, 499, 500, 503, 504)
CREATE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "A response object, or with stream=true semantic server-sent events",
        "content": {"application/json": {"schema": {}}, "text/event-stream": {"schema": {}}},
    },
    **{status: {"model": ErrorBody} for status in _ERRORS},
}
READ_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404)
}
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ResponseCreateRequest"}}
    },
}


def _service(request: Request) -> ResponsesService:
    service = request.app.state.gmaivl.responses
    if service is None:
        raise errors.NotFound("The Responses API is not served here.")
    return service


@router.post(
    "/v1/responses", openapi_extra={"requestBody": REQUEST_BODY}, responses=CREATE_RESPONSES
)
async def create_response(request: Request) -> Response:
    service = _service(request)
    body = await parsed_body(request, ResponseCreateRequest)
    ctx = context_of(request)
    return await answered(request, lambda watch: service.create(body, ctx, watch))


@router.get("/v1/responses/{response_id}", responses=READ_ERRORS)
async def retrieve_response(response_id: str, request: Request) -> JSONResponse:
    service = _service(request)
    return JSONResponse(await service.get(response_id, viewer_of(context_of(request))))


@router.delete("/v1/responses/{response_id}", responses=READ_ERRORS)
async def delete_response(response_id: str, request: Request) -> JSONResponse:
    service = _service(request)
    return JSONResponse(await service.delete(response_id, viewer_of(context_of(request))))


@router.post("/v1/responses/{response_id}/cancel", responses=READ_ERRORS)
async def cancel_response(response_id: str, request: Request) -> JSONResponse:
    service = _service(request)
    return JSONResponse(await service.cancel(response_id, viewer_of(context_of(request))))


@router.get("/v1/responses/{response_id}/input_items", responses=READ_ERRORS)
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = Query(None, max_length=128),
) -> JSONResponse:
    service = _service(request)
    viewer = viewer_of(context_of(request))
    return JSONResponse(await service.input_items(response_id, viewer, limit, order, after))
