"""Request and response models of the OpenAI chat API, field names verbatim
(the response models document the schema; `responses` renders the bodies).

Extensions are few and named as such: `priority` (a lane) on the request, and
`image_url.dicom` (window, frames) on an image part (docs/pacs.md).
Unknown fields are ignored, as the OpenAI SDK may send newer ones; OpenAI parameters
that would change the answer and that no engine here honours are refused by name
(`api/parameters.py`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.core.lanes import Lane
from service.media.dicom import DicomOptions
from service.media.windowing import MAX_WINDOW_VALUE, PRESETS, Window


class StrictRequest(BaseModel):
    """The base of every request model. Types are strict, as OpenAI's: a number is a
    JSON number, a boolean a JSON boolean (`"temperature": "0.5"`, `"max_tokens": true`,
    `"include_usage": "yes"` are 400 naming the field, never guessed). NaN and
    Infinity are refused (pydantic's JSON parser accepts the literals, and a large
    exponent such as 1e999 parses as Infinity)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


# A lane by its name. Lax only so that a body validated from Python objects (FastAPI's
# path for a parsed body) takes the name as strict JSON parsing does; lanes are strings.
LaneName = Annotated[Lane, Field(strict=False)]


class TextPart(StrictRequest):
    type: Literal["text"]
    text: str


class WindowSpec(StrictRequest):
    """An explicit window in modality units (HU for CT)."""

    center: float = Field(ge=-MAX_WINDOW_VALUE, le=MAX_WINDOW_VALUE)
    width: float = Field(ge=1.0, le=MAX_WINDOW_VALUE)
    function: Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"] = "LINEAR"


class DicomImageOptions(StrictRequest):
    """Extension: how a DICOM image is rendered. `window` is a preset name or
    {center, width}; `frames` are 1-based frame numbers (default: the middle frame)."""

    window: str | WindowSpec | None = None
    frames: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1, max_length=64)

    @field_validator("window")
    @classmethod
    def known_preset(cls, value: str | WindowSpec | None) -> str | WindowSpec | None:
        if isinstance(value, str) and value.strip().lower() not in PRESETS:
            raise ValueError("unknown window preset; presets: " + ", ".join(PRESETS))
        return value.strip().lower() if isinstance(value, str) else value

    def to_options(self) -> DicomOptions:
        window: str | Window | None
        if isinstance(self.window, WindowSpec):
            window = Window(self.window.center, self.window.width, self.window.function)
        else:
            window = self.window
        return DicomOptions(window=window, frames=tuple(self.frames or ()))


class ImageURL(StrictRequest):
    url: str
    detail: Literal["auto", "low", "high"] | None = None
    dicom: DicomImageOptions | None = Field(None, description="Extension: DICOM rendering.")

    def image_count(self) -> int:
        """Images this part becomes: one per requested frame."""
        return len(self.dicom.frames) if self.dicom and self.dicom.frames else 1


class ImagePart(StrictRequest):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(StrictRequest):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = Field(None, validate_default=True)
    name: str | None = None

    @field_validator("content")
    @classmethod
    def content_unless_assistant(
        cls, value: str | list[ContentPart] | None, info: ValidationInfo
    ) -> str | list[ContentPart] | None:
        # As OpenAI: only an assistant message (one that called a tool) may have none.
        if value is None and info.data.get("role", "assistant") != "assistant":
            raise ValueError("only an assistant message may have no content")
        return value


class StreamOptions(StrictRequest):
    include_usage: bool = False


class JSONSchema(StrictRequest):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def finite_numbers(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # `Any` escapes allow_inf_nan: a NaN here would reach the engine and its JSON.
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("the schema holds NaN or Infinity; JSON has neither") from None
        return value


class ResponseFormat(StrictRequest):
    """`text`, `json_object`, or `json_schema` (structured output, engine permitting)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchema | None = None


class _KeepsUnknownFields(StrictRequest):
    """A request whose unknown fields are kept aside (`model_extra`): OpenAI parameters
    this server does not honour are refused by name (api/parameters.py), the rest
    ignored. No NaN or Infinity among them either."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def finite_extras(self) -> Self:
        if self.model_extra:
            try:
                json.dumps(self.model_extra, allow_nan=False)
            except ValueError:
                raise ValueError("a field holds NaN or Infinity; JSON has neither") from None
        return self


class ChatCompletionRequest(_KeepsUnknownFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128, description="1 only: n > 1 is 400 unsupported_parameter.")
    logprobs: bool | None = Field(
        None, description="Each answer token's log probability (choices[].logprobs.content)."
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="Alternatives per token; needs logprobs: true."
    )
    user: str | None = None
    response_format: ResponseFormat | None = None
    priority: LaneName | None = Field(None, description="Extension: the priority lane.")

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class DicomRendering(BaseModel):
    """Extension: how one DICOM image part was rendered (frames and window used)."""

    model_config = ConfigDict(extra="allow")


class ChatCompletionResponse(BaseModel):
    """A non-stream answer. Streams send `chat.completion.chunk` events with the same
    fields (`service.api.responses`), `dicom` on the first chunk."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    dicom: list[DicomRendering] | None = Field(
        None, description="Extension: one entry per DICOM image part (absent without DICOM)."
    )


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error response: OpenAI's envelope (documented in the OpenAPI schema)."""

    error: ErrorDetail
