"""The bodies of the Responses API: the `response` object, and its semantic
server-sent events (`event:` names, `sequence_number`), rendered for the hot path.

A stream is `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, one
`response.output_text.delta` per batch of tokens, `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, then one terminal
event: `response.completed`, `response.incomplete` or `response.failed` (after an
`error` event). The delta event is the only per-token one: its constant parts are
rendered once per stream and only the sequence number and the text are formatted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from service import errors
from service.api.responses_api.input import output_item, output_text
from service.api.responses_api.protocol import ResponseCreateRequest
from service.core.generation import TokenLogprobs, Usage


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def logprobs_body(tokens: Sequence[TokenLogprobs]) -> list[dict[str, Any]]:
    return [t.as_openai() for t in tokens]


def echoed_settings(body: ResponseCreateRequest, store: bool) -> dict[str, Any]:
    """The request's settings as OpenAI echoes them on every response object."""
    fmt = body.text.format if body.text is not None and body.text.format is not None else None
    return {
        "background": bool(body.background),
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": None,
        "metadata": dict(body.metadata or {}),
        "model": body.model,
        "parallel_tool_calls": True,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {
            "format": fmt.model_dump(by_alias=True, exclude_none=True)
            if fmt is not None
            else {"type": "text"},
            "verbosity": "medium",
        },
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": body.top_logprobs or 0,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": "disabled",
        "user": body.user,
    }


def response_object(
    response_id: str,
    created_at: int,
    settings: dict[str, Any],
    status: str,
    *,
    item_id: str | None = None,
    text: str | None = None,
    usage: Usage | None = None,
    error: dict[str, Any] | None = None,
    logprobs: Sequence[TokenLogprobs] | None = None,
    dicom: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `response` object; `text` (with `item_id`) makes its one output message."""
    output: list[dict[str, Any]] = []
    if text is not None and item_id is not None:
        item_status = "incomplete" if status == "incomplete" else "completed"
        item = output_item(item_id, text, item_status)
        if logprobs is not None:
            item["content"] = [output_text(text, logprobs_body(logprobs))]
        output.append(item)
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "output": output,
        "usage": usage_body(usage) if usage is not None else None,
        **settings,
    }
    if dicom:
        body["dicom"] = dicom  # extension, as on chat: frames and window per DICOM part
    return body


def error_object(exc: errors.ServiceError) -> dict[str, Any]:
    """A failed response's `error`: `code` from OpenAI's list (what SDKs switch on),
    the message, and our own code beside it (`gmaivl_code`, extension; the same code
    as the HTTP error or the stream's `error` event)."""
    detail = errors.to_error_response(exc).body["error"]
    if isinstance(exc, errors.Overloaded):
        code = "rate_limit_exceeded"
    elif isinstance(exc, errors.ImageFetchFailed):
        code = "failed_to_download_image"
    elif isinstance(exc, errors.ImageTooLarge):
        code = "image_too_large"
    elif isinstance(exc, errors.UnprocessableImage):
        code = "image_parse_error"
    elif isinstance(exc, errors.InvalidRequest):
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {
        "code": code,
        "message": detail["message"],
        "param": detail["param"],
        "gmaivl_code": detail["code"] or detail["type"],
    }


class EventWriter:
    """One stream's events in order, each with the next `sequence_number`, rendered as
    text: the constant parts (the response's id and echoed settings, the item and
    part envelopes) once per stream, so each event formats only what changes. The
    JSON is what `response_object` and json.dumps would give, key order aside
    (tests/service/api/responses_api/test_bodies.py checks that)."""

    def __init__(
        self,
        response_id: str,
        item_id: str,
        created_at: int,
        settings: dict[str, Any],
        dicom: list[dict[str, Any]] | None = None,
    ) -> None:
        self.item_id = item_id
        self.sequence = 0
        item = _dumps(item_id)
        self._head = (
            '{"id":' + _dumps(response_id) + ',"object":"response","created_at":'
            f'{created_at},"status":"'
        )
        extension = ',"dicom":' + _dumps(dicom) if dicom else ""
        self._tail = "," + _dumps(settings)[1:-1] + extension + "}"
        self._item_head = '{"id":' + item + ',"type":"message","status":"'
        self._where = ',"item_id":' + item + ',"output_index":0,"content_index":0'
        self._delta_head = (
            'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"'
            + self._where
            + ',"sequence_number":'
        )

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence - 1

    def _event(self, kind: str, fields: str) -> str:
        """`fields`: the event's JSON members after `type`, with a leading comma."""
        sequence = self._next()
        return f'event: {kind}\ndata: {{"type":"{kind}"{fields},"sequence_number":{sequence}}}\n\n'

    def event(self, kind: str, payload: dict[str, Any]) -> str:
        return self._event(kind, "," + _dumps(payload)[1:-1] if payload else "")

    def response(
        self,
        status: str,
        output: str = "[]",
        usage: Usage | None = None,
        error: dict[str, Any] | None = None,
    ) -> str:
        """The response object as JSON text (`output`: its output items' JSON)."""
        completed_at = str(int(time.time())) if status == "completed" else "null"
        incomplete = '{"reason":"max_output_tokens"}' if status == "incomplete" else "null"
        return (
            f'{self._head}{status}","completed_at":{completed_at},"error":'
            f'{_dumps(error) if error else "null"},"incomplete_details":{incomplete},'
            f'"output":{output},"usage":{_dumps(usage_body(usage)) if usage else "null"}'
            + self._tail
        )

    def lifecycle(self, kind: str, response: str) -> str:
        """`response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`."""
        return self._event(kind, ',"response":' + response)

    def opening(self) -> str:
        """The output item and its text part, announced before the first delta."""
        item = self._item_head + 'in_progress","role":"assistant","content":[]}'
        return self._event(
            "response.output_item.added", ',"output_index":0,"item":' + item
        ) + self._event(
            "response.content_part.added",
            self._where + ',"part":{"type":"output_text","text":"","annotations":[]}',
        )

    def delta(self, text: str, logprobs: Sequence[TokenLogprobs] = ()) -> str:
        sequence = self._next()
        lp = _dumps(logprobs_body(logprobs)) if logprobs else "[]"
        return f'{self._delta_head}{sequence},"delta":{_dumps(text)},"logprobs":{lp}}}\n\n'

    def closing(
        self, text: str, status: str, logprobs: Sequence[TokenLogprobs] | None = None
    ) -> tuple[str, str]:
        """The text, its part and its item, done (`status`: completed or incomplete);
        and the output items' JSON for the final response."""
        text_json = _dumps(text)
        lp = _dumps(logprobs_body(logprobs)) if logprobs is not None else None
        part = (
            '{"type":"output_text","text":'
            + text_json
            + ',"annotations":[]'
            + (',"logprobs":' + lp if lp is not None else "")
            + "}"
        )
        item = self._item_head + status + '","role":"assistant","content":[' + part + "]}"
        events = (
            self._event(
                "response.output_text.done",
                self._where + ',"text":' + text_json + ',"logprobs":' + (lp or "[]"),
            )
            + self._event("response.content_part.done", self._where + ',"part":' + part)
            + self._event("response.output_item.done", ',"output_index":0,"item":' + item)
        )
        return events, "[" + item + "]"

    def error(self, exc: errors.ServiceError) -> str:
        detail = errors.to_error_response(exc).body["error"]
        return self.event(
            "error",
            {"code": detail["code"], "message": detail["message"], "param": detail["param"]},
        )
