"""Which Responses API parameters this server honours and which it refuses
(docs/api.md has the table, one row per request field).

As on chat (`api/parameters.py`): a parameter that would change the answer and
that no engine here honours is a 400 `unsupported_parameter` naming the field;
neutral values that SDKs send on every call (`tools: []`, `include: []`,
`tool_choice: "auto"` with no tools, `parallel_tool_calls`, `truncation:
"disabled"`, `reasoning` without effort) are accepted, as are fields that change
nothing about the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service import errors
from service.api.parameters import REFUSED as CHAT_REFUSED
from service.api.parameters import refuse_extras
from service.api.responses_api.protocol import (
    InputImage,
    InputMessage,
    OtherItem,
    OtherPart,
    ResponseCreateRequest,
)

LOGPROBS = "message.output_text.logprobs"

# include values: honoured, or about item kinds that never occur here (no tools, no
# reasoning items), so asking for them changes nothing.
INCLUDABLE = frozenset(
    {
        LOGPROBS,
        "message.input_image.image_url",
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
    }
)


def _set(value: Any) -> bool:
    return value is not None


def _reasoning(value: Any) -> bool:
    """Only no reasoning is a no-op: effort unset or "none", no summary asked for."""
    if value is None:
        return False
    if not isinstance(value, dict):
        return True
    return value.get("effort") not in (None, "none") or any(
        value.get(key) is not None for key in ("summary", "generate_summary")
    )


def _truncation(value: Any) -> bool:
    return value not in (None, "disabled")


# field -> "the request asks for something with it"
REFUSED: dict[str, Callable[[Any], bool]] = {
    "tools": CHAT_REFUSED["tools"],
    "tool_choice": CHAT_REFUSED["tool_choice"],
    "reasoning": _reasoning,
    "truncation": _truncation,
    "conversation": _set,
    "prompt": _set,
    "context_management": CHAT_REFUSED["tools"],  # non-empty
    "moderation": _set,
}

# Accepted, with no effect on the answer.
IGNORED = (
    "parallel_tool_calls",
    "max_tool_calls",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "stream_options",
    "background_options",
    "access_programs",
    "image",
)


def check_parameters(body: ResponseCreateRequest) -> None:
    """400 for the first parameter, input item or content part this server cannot honour."""
    refuse_extras(body.model_extra or {}, REFUSED)
    if body.text is not None and body.text.verbosity not in (None, "medium"):
        raise _unsupported("text.verbosity")
    for value in body.include or ():
        if value not in INCLUDABLE:
            raise errors.InvalidRequest(
                "include holds a value this API does not define.",
                param="include",
                code="invalid_request",
            )
    for i, item in enumerate(body.input_items()):
        if isinstance(item, OtherItem):
            raise _unsupported(f"input[{i}]", f"Input items of type {item.type!r} are")
        check_message(item, f"input[{i}]")


def check_message(message: InputMessage, param: str) -> None:
    if isinstance(message.content, str):
        return
    for j, part in enumerate(message.content):
        where = f"{param}.content[{j}]"
        if isinstance(part, OtherPart):
            raise _unsupported(where, f"Content parts of type {part.type[:40]!r} are")
        if isinstance(part, InputImage):
            if part.file_id is not None:
                raise _unsupported(f"{where}.file_id", "Images by file_id are")
            if part.image_url is None:
                raise errors.InvalidRequest(
                    "An input_image needs image_url.",
                    param=f"{where}.image_url",
                    code="invalid_request",
                )
            if message.role == "assistant":
                raise errors.InvalidRequest(
                    "Assistant messages carry text only.", param=where, code="invalid_request"
                )


def _unsupported(param: str, what: str | None = None) -> errors.InvalidRequest:
    subject = what or f"The parameter {param} is"
    return errors.InvalidRequest(
        f"{subject} not supported by this server.", param=param, code="unsupported_parameter"
    )
