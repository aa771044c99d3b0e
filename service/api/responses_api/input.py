"""Responses input -> chat messages, and the input items a stored response keeps.

A Responses request becomes the chat request the shared planner and job path
serve: `instructions` first (a system message, as OpenAI puts them), then the
conversation of `previous_response_id` (its inputs and answers, oldest first),
then `input`. Each chat message remembers where it came from, so an error about
`messages[2].content[1]` reaches the client as `input[0].content[1]`.

What is kept for a stored response (`input_items`, and the context of a later
`previous_response_id`): text as sent; an http(s) or DICOMweb image as its URL
(fetched again under the same rules when the conversation continues); a `data:`
image as the pixels the model received, a PNG per image (a DICOM part: one per
frame, with the frame and window used beside it) -- never the uploaded file, so
no DICOM header is ever stored (docs/security.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import errors
from service.api.protocol import ChatMessage, ImagePart, ImageURL, TextPart
from service.api.responses_api.protocol import InputImage, InputMessage, OtherItem


def new_item_id() -> str:
    return "msg_" + uuid.uuid4().hex


@dataclass(frozen=True)
class ChatInput:
    messages: list[ChatMessage]
    sources: list[str]  # per message: the request field it came from (errors name it)


def to_chat_input(
    instructions: str | None,
    history: Sequence[dict[str, Any]],
    items: Sequence[InputMessage | OtherItem],
) -> ChatInput:
    """The chat messages of a Responses request: instructions, history, input.
    `items` were checked (`parameters.check_parameters`): messages only."""
    messages: list[ChatMessage] = []
    sources: list[str] = []
    if instructions:
        messages.append(ChatMessage.model_construct(role="system", content=instructions))
        sources.append("instructions")
    for item in history:
        messages.append(chat_message(InputMessage.model_validate(item)))
        sources.append("previous_response_id")
    for i, item in enumerate(items):
        assert isinstance(item, InputMessage)
        messages.append(chat_message(item))
        sources.append(f"input[{i}]")
    return ChatInput(messages, sources)


def chat_message(item: InputMessage) -> ChatMessage:
    """The chat form of a message already validated as a Responses item: built
    without validating again (`model_construct`), as the chat models would hold it."""
    if isinstance(item.content, str):
        return ChatMessage.model_construct(role=item.role, content=item.content)
    parts: list[TextPart | ImagePart] = []
    for part in item.content:
        if isinstance(part, InputImage):
            assert part.image_url is not None  # checked
            detail = None if part.detail == "original" else part.detail
            url = ImageURL.model_construct(url=part.image_url, detail=detail, dicom=part.dicom)
            parts.append(ImagePart.model_construct(type="image_url", image_url=url))
        else:
            text = part.text  # type: ignore[union-attr]
            parts.append(TextPart.model_construct(type="text", text=text))
    return ChatMessage.model_construct(role=item.role, content=parts)


_MESSAGE_PARAM = re.compile(r"^messages\[(\d+)\]")


def rename_param(exc: errors.ServiceError, sources: Sequence[str]) -> errors.ServiceError:
    """An error about the chat form, renamed to the Responses field it came from."""
    param = exc.param
    if param is None:
        return exc
    found = _MESSAGE_PARAM.match(param)
    if found and int(found.group(1)) < len(sources):
        source = sources[int(found.group(1))]
        rest = param[found.end() :] if source.startswith("input[") else ""
        exc.param = source + rest
    elif param in ("max_tokens", "max_completion_tokens"):
        exc.param = "max_output_tokens"
        exc.message = exc.message.replace("max_tokens", "max_output_tokens")
    elif param == "response_format":
        exc.param = "text.format"
    elif param == "messages":
        exc.param = "input"
    return exc


@dataclass(frozen=True)
class KeptImage:
    """What a resolved image part leaves for storage: its URL, or its pixels."""

    urls: list[str]  # the part's own URL, or one PNG data URL per image
    rendering: dict[str, Any] | None  # DICOM: frames and window used


def kept_items(
    items: Sequence[InputMessage | OtherItem], kept: Sequence[KeptImage]
) -> list[dict[str, Any]]:
    """The input items to store, `kept` filling the image parts in order."""
    images = iter(kept)
    out: list[dict[str, Any]] = []
    for item in items:
        assert isinstance(item, InputMessage)
        if isinstance(item.content, str):
            content: list[dict[str, Any]] = [{"type": "input_text", "text": item.content}]
        else:
            content = []
            for part in item.content:
                if isinstance(part, InputImage):
                    content += _kept_image(part, next(images))
                elif part.type == "output_text":
                    content.append({"type": "output_text", "text": part.text, "annotations": []})  # type: ignore[union-attr]
                else:
                    content.append({"type": "input_text", "text": part.text})  # type: ignore[union-attr]
        out.append(
            {
                "id": item.id or new_item_id(),
                "type": "message",
                "role": item.role,
                "status": "completed",
                "content": content,
            }
        )
    return out


def _kept_image(part: InputImage, kept: KeptImage) -> list[dict[str, Any]]:
    detail = part.detail or "auto"
    if kept.urls == [part.image_url]:  # a URL: fetched again, rendered again the same way
        image: dict[str, Any] = {
            "type": "input_image",
            "image_url": part.image_url,
            "detail": detail,
        }
        if part.dicom is not None:
            image["dicom"] = part.dicom.model_dump(exclude_none=True)
        return [image]
    out = []
    for url in kept.urls:
        image = {"type": "input_image", "image_url": url, "detail": detail}
        if kept.rendering is not None:
            image["dicom_rendering"] = kept.rendering  # what the pixels were made with
        out.append(image)
    return out


def output_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """The one output item of a response: an assistant message with its text."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)],
    }


def output_text(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return part
