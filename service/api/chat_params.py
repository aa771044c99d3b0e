"""The scalar parameters of a chat request, validated: lane, deadline, sampling."""

from __future__ import annotations

from typing import Any

from service import errors
from service.api.protocol import ChatCompletionRequest
from service.config import Settings
from service.engines.base import SamplingParams
from service.queue.lanes import Lane


def lane_of(body: ChatCompletionRequest, header: str | None, default: Lane) -> Lane:
    """The body's `priority`, else the X-Priority header, else the default lane."""
    if body.priority is not None:
        return body.priority
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
    try:
        seconds = float(header)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= settings.max_request_timeout:
        raise errors.InvalidRequest(
            "X-Request-Timeout must be a number of seconds in (0, "
            f"{settings.max_request_timeout:g}].",
            param="X-Request-Timeout",
            code="invalid_timeout",
        )
    return seconds


def sampling_of(body: ChatCompletionRequest, settings: Settings) -> SamplingParams:
    max_tokens = body.requested_max_tokens() or settings.max_tokens_default
    if max_tokens > settings.max_tokens_limit:
        raise errors.InvalidRequest(
            f"max_tokens is {max_tokens}; the limit is {settings.max_tokens_limit}.",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_sequences(),
        response_format=response_format(body),
    )


def response_format(body: ChatCompletionRequest) -> dict[str, Any] | None:
    """The structured-output constraint in the engine-neutral form engines receive
    (`{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {..., "schema"}}`);
    None for plain text."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.json_schema is None or not fmt.json_schema.schema_:
        raise errors.InvalidRequest(
            "response_format of type json_schema needs json_schema.schema.",
            param="response_format",
            code="invalid_response_format",
        )
    return {"type": "json_schema", "json_schema": fmt.json_schema.model_dump(by_alias=True)}
