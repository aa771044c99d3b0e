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
    logprobs: int | None = None
    """None: no log probabilities. k (0..20): each generated token's log probability and
    its k most likely alternatives (OpenAI's `logprobs: true, top_logprobs: k`)."""


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
    trace_headers: dict[str, str] | None = None  # W3C carrier of the engine's span (vLLM joins it)
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


# What OpenAI reports for a token the model gives no probability at all (-inf is not JSON).
MIN_LOGPROB = -9999.0


@dataclass(frozen=True)
class Logprob:
    """One token and its log probability under the model (raw logits, before sampling)."""

    token: str
    logprob: float
    bytes: tuple[int, ...]

    @classmethod
    def of(cls, token: str, logprob: float, raw: bytes | None = None) -> Logprob:
        """Finite always: -inf and NaN become MIN_LOGPROB, so the JSON stays JSON.
        `raw` is the token's own bytes where the engine knows them (a byte-level token
        may be part of a character: its text is then U+FFFD, its bytes are exact)."""
        value = float(logprob)
        if not value > MIN_LOGPROB:  # also NaN
            value = MIN_LOGPROB
        return cls(token, value, tuple(token.encode("utf-8") if raw is None else raw))

    def as_openai(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "bytes": list(self.bytes)}


@dataclass(frozen=True)
class TokenLogprobs:
    """A generated token's log probability and its most likely alternatives."""

    chosen: Logprob
    top: tuple[Logprob, ...] = ()

    def as_openai(self) -> dict[str, Any]:
        return {**self.chosen.as_openai(), "top_logprobs": [t.as_openai() for t in self.top]}


@dataclass(frozen=True)
class Delta:
    """New text since the previous delta (never a partial UTF-8 character), and, when
    the request asked, the log probabilities of the tokens generated since then
    (their text may still be held back: a delta may carry them with empty text)."""

    text: str
    logprobs: tuple[TokenLogprobs, ...] = ()


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Finish:
    finish_reason: FinishReason
    usage: Usage


GenerationEvent = Delta | Finish
