"""A fake engine that emits a fixed token stream at a fixed pace (token i at i x interval).

Shipped in the package (like HTTPX's mock transport) so tests and the gateway
benchmark can isolate the serving path from any model. It is never the proof
that a model works: the API tests also run the real transformers engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from service.core.generation import (
    Delta,
    Finish,
    GenerationEvent,
    GenerationRequest,
    Logprob,
    TokenLogprobs,
    Usage,
)
from service.engines.base import refuse_structured_output

TOKENS = ("The", " image", " shows", " no", " acute", " abnormality", ".")


def fake_logprobs(i: int, k: int) -> TokenLogprobs:
    """Token i's log probabilities: itself at -0.25, then the next tokens of TOKENS
    at -1, -2, ... (deterministic, so tests can check every field)."""
    top = tuple(
        Logprob.of(TOKENS[(i + j) % len(TOKENS)], -0.25 if j == 0 else -float(j)) for j in range(k)
    )
    return TokenLogprobs(Logprob.of(TOKENS[i % len(TOKENS)], -0.25), top)


class FakeEngine:
    name = "fake"

    def __init__(
        self,
        *,
        token_interval: float = 0.0,
        max_concurrency: int = 1024,
        startup_delay: float = 0.0,
        end_of_sentence: bool = False,
    ) -> None:
        self.token_interval = token_interval
        # True: the answer ends after its first sentence, finish_reason "stop", as a
        # model's end-of-sequence token ends it (clients that treat "length" as a failure)
        self.end_of_sentence = end_of_sentence
        self.max_concurrency = max_concurrency
        self.startup_delay = startup_delay
        self.running: set[str] = set()
        self.started: list[str] = []  # request ids in the order they started (lane tests)
        self.aborted: list[str] = []
        self.tokens_emitted = 0
        self._ready = False

    async def start(self) -> None:
        await asyncio.sleep(self.startup_delay)
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Yield `max_tokens` tokens cycling through TOKENS; one prompt token per word."""
        refuse_structured_output(request, self.name)
        rid = request.request_id
        self.running.add(rid)
        self.started.append(rid)
        try:
            prompt_tokens = sum(
                len(part.get("text", "").split()) or 1
                for message in request.messages
                for part in message["content"]
            )
            text = ""
            loop = asyncio.get_running_loop()
            started = loop.time()
            for i in range(request.sampling.max_tokens):
                if rid in self.aborted:
                    return
                if self.token_interval:
                    # An absolute schedule, like an engine stepping on its own clock: a slow
                    # consumer delays delivery, not the production of later tokens.
                    await asyncio.sleep(
                        max(0.0, started + (i + 1) * self.token_interval - loop.time())
                    )
                token = TOKENS[i % len(TOKENS)]
                text += token
                self.tokens_emitted += 1
                hit = next((s for s in request.sampling.stop if s in text), None)
                if hit is not None:
                    yield Finish("stop", Usage(prompt_tokens, i + 1))
                    return
                k = request.sampling.logprobs
                yield Delta(token, () if k is None else (fake_logprobs(i, k),))
                if self.end_of_sentence and i == len(TOKENS) - 1:
                    yield Finish("stop", Usage(prompt_tokens, i + 1))
                    return
            yield Finish("length", Usage(prompt_tokens, request.sampling.max_tokens))
        finally:
            self.running.discard(rid)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def stop(self) -> None:
        self._ready = False

    def collectors(self) -> list[Any]:
        return []
