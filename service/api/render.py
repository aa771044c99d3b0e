"""`POST /v1/images/render`: "what the model saw". One image part goes through the
gateway's own `MediaResolver` (the chat path's), and comes back as the PNGs an
engine would receive, with the frames and window used for DICOM.

PNG is lossless, so the pixels a viewer gets are the engine's pixels exactly;
`max_side` shrinks them afterwards for thumbnails (then they are a preview only).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from service import errors
from service.api.context import context_of
from service.api.protocol import ErrorBody, ImageURL, StrictRequest
from service.api.state import AppState
from service.core.generation import ImageInput
from service.media.images import png_data_url
from service.media.resolve import ImageRequest
from service.serving.limits import check_image_count

router = APIRouter()

PARAM = "image_url"


class RenderRequest(StrictRequest):
    """An image part as a chat request carries it, and an optional thumbnail size."""

    image_url: ImageURL
    max_side: int | None = Field(
        None, ge=16, le=4096, description="Shrink the result to this long side (thumbnails)."
    )


class RenderedImage(BaseModel):
    png: str = Field(description="data:image/png;base64,... of the pixels")
    width: int
    height: int


class RenderResponse(BaseModel):
    object: str = "image.rendering"
    images: list[RenderedImage] = Field(description="One per image the part becomes (frames).")
    dicom: dict[str, Any] | None = Field(
        None, description="DICOM only: frame_count, and per frame its number and window used."
    )
    resized: bool = Field(description="True when max_side shrank the model's pixels.")


@router.post(
    "/v1/images/render",
    response_model=RenderResponse,
    responses={status: {"model": ErrorBody} for status in (400, 401, 403, 413, 422)},
)
async def render_image(request: Request) -> RenderResponse:
    state: AppState = request.app.state.gmaivl
    try:
        body = RenderRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    part = body.image_url
    ctx = context_of(request)
    principal = ctx.principal
    if principal is not None:
        cap = principal.policy.max_images_per_request
        check_image_count(part.image_count(), cap, param=PARAM, tenant=True)
    limit = state.settings.images.max_images_per_request
    check_image_count(part.image_count(), limit, param=PARAM)
    image_request = ImageRequest(part.url, part.dicom.to_options() if part.dicom else None, PARAM)
    try:
        resolved = await state.media.resolve(image_request)
    except errors.ServiceError as exc:
        state.metrics.rejections.labels(exc.code or type(exc).__name__).inc()
        raise
    audit = ctx.audit
    if audit is not None:
        audit.images += len(resolved.images)
        if resolved.sop_instance_uid:
            audit.note_sop_instance_uid(resolved.sop_instance_uid)
    images = await asyncio.to_thread(encode_all, resolved.images, body.max_side)
    resized = any(
        (out.width, out.height) != (image.width, image.height)
        for out, image in zip(images, resolved.images, strict=True)
    )
    return RenderResponse(images=images, dicom=resolved.info, resized=resized)


def encode_all(images: list[ImageInput], max_side: int | None) -> list[RenderedImage]:
    rendered = (png_data_url(image, max_side) for image in images)
    return [RenderedImage(png=url, width=w, height=h) for url, w, h in rendered]
