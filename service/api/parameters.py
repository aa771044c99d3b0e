"""Which OpenAI chat parameters this server honours and which it refuses.

A clinical client must never get an answer that silently skips what it asked
for: a parameter that would change the answer and that no engine here honours
is a 400 `unsupported_parameter` naming the field, not a 200 without it.
Parameters that change nothing about the answer are accepted and ignored, as
are fields OpenAI does not define (newer SDKs send newer ones). docs/api.md
lists the decision per parameter.

Honoured (see protocol.ChatCompletionRequest): model, messages, max_tokens,
max_completion_tokens, temperature, top_p, seed, stop, stream, stream_options,
response_format (engine permitting), logprobs, top_logprobs, n (1), user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service import errors
from service.api.protocol import ChatCompletionRequest


def _set(value: Any) -> bool:
    return value is not None


def _non_empty(value: Any) -> bool:
    return bool(value)


def _choice(value: Any) -> bool:
    """tool_choice / function_call: only "none" (and "auto" with nothing to call) is a no-op."""
    return value not in (None, "none", "auto")


def _non_zero(value: Any) -> bool:
    return value is not None and value != 0


def _not_text_only(value: Any) -> bool:
    return value is not None and value != ["text"]


# field -> "the request asks for something with it"
REFUSED: dict[str, Callable[[Any], bool]] = {
    "tools": _non_empty,
    "tool_choice": _choice,
    "functions": _non_empty,
    "function_call": _choice,
    "audio": _set,
    "modalities": _not_text_only,
    "logit_bias": _non_empty,
    "presence_penalty": _non_zero,
    "frequency_penalty": _non_zero,
    "prediction": _set,
    "web_search_options": _set,
    "reasoning_effort": _set,
    "verbosity": _set,
}

# Accepted, with no effect on the answer.
IGNORED = (
    "parallel_tool_calls",
    "store",
    "metadata",
    "service_tier",
    "user",
    "safety_identifier",
    "prompt_cache_key",
)


def refuse_extras(extra: dict[str, Any], refused: dict[str, Callable[[Any], bool]]) -> None:
    """400 `unsupported_parameter` for the first field of `refused` that `extra` (a
    request's unknown fields) sets to something that asks for it."""
    for name, asks in refused.items():
        if name in extra and asks(extra[name]):
            raise errors.InvalidRequest(
                f"The parameter {name} is not supported by this server.",
                param=name,
                code="unsupported_parameter",
            )


def check_parameters(body: ChatCompletionRequest) -> None:
    """400 for the first parameter the request sets that no engine here honours."""
    refuse_extras(body.model_extra or {}, REFUSED)
    if body.n != 1:
        raise errors.InvalidRequest(
            "Only one choice per request is supported (n must be 1).",
            param="n",
            code="unsupported_parameter",
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise errors.InvalidRequest(
            "top_logprobs needs logprobs set to true.", param="top_logprobs", code="invalid_request"
        )
