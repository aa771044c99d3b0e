"""Limits on the shape of a request, checked before or right after parsing.

JSON depth is checked on the raw bytes, before pydantic: a body of 10^6 nested
brackets must cost a scan, not a recursion. Only bodies with more brackets than
the limit are scanned; the scan is numpy (C loops, memory a few times the body):
quotes not escaped by an odd run of backslashes delimit strings, brackets
outside strings step the depth up or down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service import errors
from service.api.protocol import ChatCompletionRequest, TextPart

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b"[{]}"


@dataclass(frozen=True)
class RequestLimits:
    max_json_depth: int
    max_messages: int
    max_text_chars: int


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body` (0 for a scalar)."""
    raw = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(raw == _QUOTE).astype(np.int64)
    if quotes.size and b"\\" in body:
        quotes = quotes[~_escaped(raw, quotes)]
    opening = np.flatnonzero((raw == _OPEN_ARRAY) | (raw == _OPEN_OBJECT))
    closing = np.flatnonzero((raw == _CLOSE_ARRAY) | (raw == _CLOSE_OBJECT))
    # A bracket is inside a string when an odd number of real quotes precede it.
    opening = opening[np.searchsorted(quotes, opening) % 2 == 0]
    closing = closing[np.searchsorted(quotes, closing) % 2 == 0]
    if opening.size == 0:
        return 0
    positions = np.concatenate((opening, closing))
    steps = np.concatenate(
        (np.ones(opening.size, dtype=np.int32), -np.ones(closing.size, dtype=np.int32))
    )
    return int(np.cumsum(steps[np.argsort(positions, kind="stable")]).max())


def _escaped(raw: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """For each quote position: preceded by an odd run of backslashes."""
    slashes = np.flatnonzero(raw == _BACKSLASH)
    # Runs of consecutive backslashes: where each starts and ends.
    breaks = np.flatnonzero(np.diff(slashes) != 1)
    ends = np.append(slashes[breaks], slashes[-1])
    starts = np.insert(slashes[breaks + 1], 0, slashes[0])
    at = np.searchsorted(ends, quotes - 1)
    found = at < ends.size
    hit = np.zeros(quotes.size, dtype=bool)
    hit[found] = ends[at[found]] == quotes[found] - 1
    lengths = np.zeros(quotes.size, dtype=np.int64)
    lengths[hit] = ends[at[hit]] - starts[at[hit]] + 1
    return hit & (lengths % 2 == 1)


def check_json_depth(body: bytes, limit: int) -> None:
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # cannot be deeper than it has brackets
    if json_depth(body) > limit:
        raise errors.InvalidRequest(
            f"The request JSON is nested deeper than {limit} levels.", code="json_too_deep"
        )


def check_shape(body: ChatCompletionRequest, limits: RequestLimits) -> None:
    """Message count and total text length, before any image is touched."""
    if len(body.messages) > limits.max_messages:
        raise errors.InvalidRequest(
            f"The request has {len(body.messages)} messages; the limit is {limits.max_messages}.",
            param="messages",
            code="too_many_messages",
        )
    chars = 0
    for message in body.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
        elif message.content is not None:
            chars += sum(len(p.text) for p in message.content if isinstance(p, TextPart))
    if chars > limits.max_text_chars:
        raise errors.InvalidRequest(
            f"The request has {chars} characters of text; the limit is {limits.max_text_chars}.",
            param="messages",
            code="text_too_long",
        )
