"""The bodies of chat answers: the non-stream `chat.completion`, and the
server-sent `chat.completion.chunk` events, rendered for the hot path.

One stream writes one chunk per token, so the constant part of each chunk
is rendered once per request and only the token text goes through json.dumps.
The output is byte-for-byte what json.dumps of the whole chunk would give
(tests/service/api/test_chunks.py checks that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service import errors
from service.core.generation import Finish, TokenLogprobs

DONE = "data: [DONE]\n\n"


def _dumps(value: Any) -> str:
    # allow_nan=False: NaN is not JSON; a non-finite number is a bug to surface, not send.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def sse(payload: dict[str, Any]) -> str:
    return f"data: {_dumps(payload)}\n\n"


def logprobs_body(tokens: Sequence[TokenLogprobs]) -> dict[str, Any]:
    """OpenAI's `choices[].logprobs`: one entry per generated token."""
    return {"content": [t.as_openai() for t in tokens], "refusal": None}


def completion(
    job_id: str,
    created: int,
    model: str,
    text: str,
    finish: Finish,
    dicom: list[dict[str, Any]],
    logprobs: Sequence[TokenLogprobs] | None = None,
) -> dict[str, Any]:
    """A `chat.completion` (protocol.ChatCompletionResponse); `dicom` only when non-empty,
    `logprobs` (a list, possibly empty) only when the request asked for them."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish.finish_reason,
                "logprobs": None if logprobs is None else logprobs_body(logprobs),
            }
        ],
        "usage": finish.usage.as_openai(),
    }
    if dicom:
        body["dicom"] = dicom
    return body


class ChunkWriter:
    def __init__(self, job_id: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {
            "id": f"chatcmpl-{job_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self.include_usage = include_usage
        head = _dumps(self.base)[:-1]  # without the closing brace
        usage = ',"usage":null' if include_usage else ""
        self._content_head = "data: " + head + ',"choices":[{"index":0,"delta":{"content":'
        self._content_tail = '},"finish_reason":null,"logprobs":null}]' + usage + "}\n\n"

    def role(self, extra: dict[str, Any] | None = None) -> str:
        """The first chunk; `extra` adds top-level extension fields (e.g. `dicom`)."""
        return self._chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                    "logprobs": None,
                }
            ],
            extra=extra,
        )

    def content(self, text: str, logprobs: Sequence[TokenLogprobs] = ()) -> str:
        if logprobs:  # off the hot path: only requests that asked for them
            return self._chunk(
                [
                    {
                        "index": 0,
                        "delta": {"content": text},
                        "finish_reason": None,
                        "logprobs": logprobs_body(logprobs),
                    }
                ]
            )
        return self._content_head + _dumps(text) + self._content_tail

    def finish(self, finish_reason: str) -> str:
        return self._chunk(
            [{"index": 0, "delta": {}, "finish_reason": finish_reason, "logprobs": None}]
        )

    def usage(self, usage: dict[str, int]) -> str:
        return self._chunk([], usage)

    def error(self, exc: errors.ServiceError) -> str:
        return sse({"error": errors.to_error_response(exc).body["error"]})

    def _chunk(
        self,
        choices: list[dict[str, Any]],
        usage: dict[str, int] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        body: dict[str, Any] = {**self.base, "choices": choices}
        if self.include_usage:
            body["usage"] = usage
        if extra:
            body.update(extra)
        return sse(body)
