"""What a worker hands an engine, and what it gets back: a generation request
(messages in chat-template form, sampling, normalized images) and the events of
its answer (`Delta`s, then exactly one `Finish`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None
    """Structured output: {"type": "json_object"} or {"type": "json_schema", "json_schema":
    {"name", "schema", ...}} (the OpenAI shape); None for free text."""


@dataclass(frozen=True)
class ImageInput:
    """A normalized image: 8-bit RGB pixels, row-major, no header to parse again."""

    width: int
    height: int
    rgb: bytes

    def to_pil(self) -> Any:
        from PIL import Image

        return Image.frombytes("RGB", (self.width, self.height), self.rgb)


@dataclass(frozen=True)
class GenerationRequest:
    """A chat in the shape chat templates expect: content parts are `{"type": "text",
    "text": ...}` or `{"type": "image"}`; `images` fill the image parts in order."""

    request_id: str
    messages: list[dict[str, Any]]
    sampling: SamplingParams
    images: list[ImageInput] = field(default_factory=list)
    model: str | None = None  # the model id asked for: an engine's LoRA adapter, or its base


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Delta:
    """New text since the previous delta (never a partial UTF-8 character)."""

    text: str


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Finish:
    finish_reason: FinishReason
    usage: Usage


GenerationEvent = Delta | Finish
