"""Which model ids a gateway answers for, and whether each can run now.

A model is *known* when it is configured (the process's own model, and in the
embedded mode its LoRA adapters) or when a worker announced it within
`queue.protocols.KNOWN_FOR` seconds; it is *live* while a worker with a fresh
heartbeat serves it. `/v1/models` lists the live ones; a chat request for a
known model that is not live is 503 `model_unavailable` with Retry-After
(a worker may be restarting), an unknown one 404 — the requested name is never
echoed, clients may put anything there.

The embedded mode has no announcements: its configured models are live (a job
waits in the queue while the engine loads, as before). A Redis gateway reads
the registry the workers' heartbeats keep, at most once per `cache_seconds`,
so a request costs no Redis round trip for this.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from service import errors
from service.queue.protocols import ModelSeen
from service.serving.context import ServedModel

UNAVAILABLE_RETRY_AFTER = 5  # seconds: about what a worker restart or failover takes


class ModelCatalog:
    def __init__(
        self,
        configured: dict[str, str | None],
        announced: Callable[[], Awaitable[list[ModelSeen]]] | None = None,
        *,
        cache_seconds: float = 1.0,
    ) -> None:
        """`configured`: model id -> its parent (None for a base model); `announced`:
        the workers' registry (`GatewayQueue.models`), None in the embedded mode."""
        self.configured = dict(configured)
        self.announced = announced
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, ModelSeen]] | None = None

    async def snapshot(self) -> dict[str, ModelSeen]:
        """Every known model id -> what is known of it."""
        if self.announced is None:
            now = time.time()
            return {m: ModelSeen(m, parent, 1, now) for m, parent in self.configured.items()}
        if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        models = {m: ModelSeen(m, parent, 0, 0.0) for m, parent in self.configured.items()}
        for seen in await self.announced():
            models[seen.id] = seen
        self._cached = (time.monotonic(), models)
        return models

    async def live(self) -> list[ModelSeen]:
        """The models a request can be answered by now, by id."""
        return sorted(
            (m for m in (await self.snapshot()).values() if m.live_workers > 0),
            key=lambda m: m.id,
        )

    async def check(self, model: str, served: ServedModel | None = None) -> ModelSeen:
        """The model a request names, or ModelNotFound / ModelUnavailable; a known one is
        noted in `served` (a model with no live worker too: the request asked for it)."""
        seen = (await self.snapshot()).get(model)
        if seen is None:
            raise errors.ModelNotFound("The requested model does not exist.", param="model")
        if served is not None:
            served.id, served.parent = seen.id, seen.parent
        if seen.live_workers <= 0:
            raise errors.ModelUnavailable(
                "No worker serves the requested model right now; retry later.",
                param="model",
                retry_after=UNAVAILABLE_RETRY_AFTER,
            )
        return seen
