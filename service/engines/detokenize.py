"""Token ids to text, incrementally: never a partial UTF-8 character, never a stop string.

Text that could still turn out to be the start of a stop string is held back
until it cannot; on a stop string the text before it is released and the rest
dropped (OpenAI's semantics: the stop sequence is not returned).
"""

from __future__ import annotations

import functools
import re
from typing import Any

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte tokens


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # decoded so far (complete characters only)
        self.sent = 0  # characters of `text` already released
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Add one token; return newly releasable text."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for its other bytes
        self.text = text
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                self.stopped = True
                self.text = self.text[:at]
                return self._release(len(self.text))
        return self._release(len(self.text) - self.holdback)

    def flush(self) -> str:
        """At the end of generation: release what was held back."""
        return "" if self.stopped else self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out = self.text[self.sent : upto]
        self.sent = upto
        return out


class TokenBytes:
    """One token's own bytes (OpenAI's `logprobs[].bytes`): exact for byte-level BPE
    pieces and SentencePiece byte tokens, the decoded text's UTF-8 otherwise."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"

    def __call__(self, token_id: int) -> tuple[str, bytes]:
        """(text, bytes) of one token; text is U+FFFD where the bytes split a character."""
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        raw: bytes | None = None
        if isinstance(piece, str):
            fallback = _BYTE_FALLBACK.match(piece)
            table = _byte_decoder()
            if fallback:
                raw = bytes([int(fallback.group(1), 16)])
            elif self.byte_level and piece and all(c in table for c in piece):
                raw = bytes(table[c] for c in piece)
        if raw is None:
            text = self.tokenizer.decode([token_id])
            return text, text.encode("utf-8")
        return raw.decode("utf-8", errors="replace"), raw


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}
