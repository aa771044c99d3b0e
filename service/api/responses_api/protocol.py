"""Request models of OpenAI's Responses API (`POST /v1/responses`), field names
verbatim (checked against the `openai` SDK's `types/responses`).

Extensions, as on chat: `priority` (a lane) on the request, and `dicom`
(window, frames) beside an `input_image` (docs/pacs.md).

Unknown fields are kept aside (`model_extra`): the parameters this server cannot
honour are refused by name (`responses_api/parameters.py`), the rest ignored.
Content parts and input items of kinds we do not serve (`input_file`,
`input_audio`, `function_call`, ...) parse as `OtherPart` / `OtherItem` so the
refusal can name them, rather than fail as a shapeless validation error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator

from service.api.protocol import (
    DicomImageOptions,
    JSONSchema,
    LaneName,
    StrictRequest,
    _KeepsUnknownFields,
)


class InputText(StrictRequest):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: Literal["input_text"]
    text: str


class OutputText(StrictRequest):
    """An earlier answer replayed as input (an assistant message; the Agents SDK sends these)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: Literal["output_text"]
    text: str


class InputImage(StrictRequest):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None
    dicom: DicomImageOptions | None = Field(None, description="Extension: DICOM rendering.")


class OtherPart(StrictRequest):
    """A content part of a kind not served here (refused by name)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: str


_PART_TAGS = {"input_text": "InputText", "output_text": "OutputText", "input_image": "InputImage"}


def _part_kind(value: Any) -> str:
    """The part's model (tags are class-like names: error paths leave them out)."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return _PART_TAGS.get(kind, "Other") if isinstance(kind, str) else "Other"


ContentPart = Annotated[
    Annotated[InputText, Tag("InputText")]
    | Annotated[OutputText, Tag("OutputText")]
    | Annotated[InputImage, Tag("InputImage")]
    | Annotated[OtherPart, Tag("Other")],
    Discriminator(_part_kind),
]


class InputMessage(StrictRequest):
    """A message input item (`type` may be left out, as in OpenAI's easy form)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class OtherItem(StrictRequest):
    """An input item of a kind not served here (tool calls, reasoning, references)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return "Message" if kind == "message" else "Other"


InputItem = Annotated[
    Annotated[InputMessage, Tag("Message")] | Annotated[OtherItem, Tag("Other")],
    Discriminator(_item_kind),
]


class TextFormat(JSONSchema):
    """`text.format`: `text`, `json_object`, or `json_schema` (chat's json_schema fields,
    flat beside `type`; `name` needed only for json_schema)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)  # type: ignore[assignment]


class TextConfig(StrictRequest):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponseCreateRequest(_KeepsUnknownFields):
    model: str
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool | None = False
    text: TextConfig | None = None
    store: bool | None = True
    previous_response_id: str | None = Field(None, max_length=128)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    user: str | None = None
    background: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None
    priority: LaneName | None = Field(None, description="Extension: the priority lane.")

    @field_validator("metadata")
    @classmethod
    def short_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value and any(len(key) > 64 for key in value):
            raise ValueError("metadata keys are at most 64 characters")
        return value

    def input_items(self) -> list[InputMessage | OtherItem]:
        """`input` as items: a string is one user message."""
        if isinstance(self.input, str):
            return [InputMessage.model_construct(role="user", content=self.input)]
        return list(self.input)
