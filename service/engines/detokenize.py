"""Token ids to text, incrementally: never a partial UTF-8 character, never a stop string.

Text that could still turn out to be the start of a stop string is held back
until it cannot; on a stop string the text before it is released and the rest
dropped (OpenAI's semantics: the stop sequence is not returned).
"""

from __future__ import annotations

from typing import Any


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
