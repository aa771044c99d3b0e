"""The engine seam: what a worker hands an engine, and what it gets back.

An engine turns one `GenerationRequest` into an async stream of `Delta`s that
ends with exactly one `Finish`. It may raise `errors.InvalidRequest` before the
first delta (e.g. the prompt does not fit the context) and `errors.EngineError`
for anything else. `abort(request_id)` stops a running generation promptly and
frees its slot; the stream then ends without a `Finish`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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


class Engine(Protocol):
    name: str
    max_concurrency: int

    async def start(self) -> None: ...

    def ready(self) -> bool: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

    async def abort(self, request_id: str) -> None: ...

    async def stop(self) -> None: ...

    def collectors(self) -> list[Any]:
        """Prometheus collectors of the engine's own series, shown on the worker's /metrics."""
        ...


def refuse_structured_output(request: GenerationRequest, engine: str) -> None:
    """For engines without constrained decoding: a clear 400 rather than free text."""
    if request.sampling.response_format is not None:
        from service import errors

        raise errors.InvalidRequest(
            f"response_format {request.sampling.response_format['type']!r} needs the vllm "
            f"engine; this model is served by the {engine} engine.",
            param="response_format",
            code="unsupported_response_format",
        )
