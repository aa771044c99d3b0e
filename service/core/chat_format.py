"""A chat in two forms, and the translation between them.

- OpenAI form: what clients send. `content` is a string, None, or a list of
  `{"type": "text", "text"}` and `{"type": "image_url", "image_url": {"url"}}` parts.
- Template form: what chat templates (transformers, vLLM) expect and what a
  `GenerationRequest` carries. `content` is always a list of `{"type": "text",
  "text"}` and `{"type": "image"}` parts; the images travel beside the messages,
  in order.

The gateway translates OpenAI -> template after resolving the images (one image
part may become several images: DICOM frames); the `openai` engine translates
template -> OpenAI to forward a request to another server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Message(Protocol):
    role: str
    content: str | Sequence[Any] | None


def to_template_messages(
    messages: Iterable[Message], images_per_image_part: Iterable[int]
) -> list[dict[str, Any]]:
    """OpenAI-form messages (the request models) -> template form. Each image part
    becomes as many `{"type": "image"}` parts as it resolved to images."""
    counts: Iterator[int] = iter(images_per_image_part)
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.content
        if content is None or isinstance(content, str):
            parts: list[dict[str, Any]] = [{"type": "text", "text": content or ""}]
        else:
            parts = []
            for part in content:
                if part.type == "image_url":
                    parts += [{"type": "image"}] * next(counts)
                else:
                    parts.append({"type": "text", "text": part.text})
        out.append({"role": message.role, "content": parts})
    return out


def to_openai_messages(
    messages: Iterable[dict[str, Any]], image_urls: Iterable[str]
) -> list[dict[str, Any]]:
    """Template-form messages -> OpenAI form, the i-th image part as the i-th URL."""
    urls = iter(image_urls)
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": next(urls)}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return out
