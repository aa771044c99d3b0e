"""A chat request's plan, computed once before any work: its lane, deadline and
sampling (validated), and its image parts with the number of images they make.
Tenancy, media resolution and the job all read the plan."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from service import errors
from service.api.parameters import check_parameters
from service.api.protocol import ChatCompletionRequest, ImagePart
from service.config import Settings
from service.core.generation import SamplingParams
from service.core.lanes import Lane
from service.serving.context import lane_from_header, timeout_of
from service.serving.limits import check_max_tokens


@dataclass(frozen=True)
class ImagePartRef:
    part: ImagePart
    param: str  # where it is in the request, e.g. "messages[0].content[1]" (errors name it)


@dataclass(frozen=True)
class RequestPlan:
    lane: Lane
    timeout: float  # seconds
    deadline: float  # wall-clock epoch seconds
    sampling: SamplingParams
    image_parts: list[ImagePartRef]
    image_count: int  # images the parts make (a DICOM part with frames makes one per frame)


def plan_request(
    body: ChatCompletionRequest, priority: str | None, timeout: str | None, settings: Settings
) -> RequestPlan:
    """The plan of `body`, given its X-Priority and X-Request-Timeout headers."""
    check_parameters(body)
    lane = lane_of(body, priority, settings.default_priority)
    seconds = timeout_of(timeout, settings)
    sampling = sampling_of(body, settings)
    parts = [
        ImagePartRef(part, f"messages[{i}].content[{j}]")
        for i, message in enumerate(body.messages)
        if isinstance(message.content, list)
        for j, part in enumerate(message.content)
        if isinstance(part, ImagePart)
    ]
    return RequestPlan(
        lane=lane,
        timeout=seconds,
        deadline=time.time() + seconds,
        sampling=sampling,
        image_parts=parts,
        image_count=sum(ref.part.image_url.image_count() for ref in parts),
    )


def lane_of(body: ChatCompletionRequest, header: str | None, default: Lane) -> Lane:
    """The body's `priority`, else the X-Priority header, else the default lane."""
    if body.priority is not None:
        return body.priority
    return lane_from_header(header, default)


def sampling_of(body: ChatCompletionRequest, settings: Settings) -> SamplingParams:
    max_tokens = body.requested_max_tokens() or settings.max_tokens_default
    check_max_tokens(max_tokens, settings.max_tokens_limit)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_sequences(),
        response_format=response_format(body),
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
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
