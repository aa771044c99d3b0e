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

While the registry does not answer (Redis restarting, a Sentinel failover), the
last set read from it is kept, with its age (`age()`): a request for a model in
it (or configured) is 503 `not_ready` with Retry-After, which clients retry —
never 404, which they do not. Only a model absent from the last set read is 404;
before the registry ever answered, every model is `not_ready`. A failed read is
cached like an answer, so an outage costs one Redis attempt per `cache_seconds`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from service import errors
from service.queue.protocols import ModelSeen
from service.serving.context import ServedModel

log = logging.getLogger("gmaivl.api")

UNAVAILABLE_RETRY_AFTER = 5  # seconds: about what a worker restart or failover takes
REGISTRY_RETRY_AFTER = 1  # seconds: a failover promotes a replica within a few


class ModelCatalog:
    def __init__(
        self,
        configured: dict[str, str | None],
        announced: Callable[[], Awaitable[list[ModelSeen]]] | None = None,
        *,
        cache_seconds: float = 1.0,
    ) -> None:
        """`configured`: model id -> its parent (None for a base model); `announced`:
        the workers' registry (`GatewayQueue.models`, raising `errors.NotReady` when
        it does not answer), None in the embedded mode."""
        self.configured = dict(configured)
        self.announced = announced
        self.cache_seconds = cache_seconds
        self._read_at: float | None = None  # monotonic time of the last read, answered or not
        self._known: dict[str, ModelSeen] = {}  # the last set the registry answered
        self._known_at: float | None = None  # epoch seconds of that answer; None: never
        self._answering = True  # whether the last read was answered

    async def snapshot(self) -> dict[str, ModelSeen]:
        """Every known model id -> what is known of it (the last known set while the
        registry does not answer)."""
        if self.announced is None:
            now = time.time()
            return {m: ModelSeen(m, parent, 1, now) for m, parent in self.configured.items()}
        if self._read_at is None or time.monotonic() - self._read_at >= self.cache_seconds:
            await self._refresh(self.announced)
        return self._known

    async def _refresh(self, announced: Callable[[], Awaitable[list[ModelSeen]]]) -> None:
        self._read_at = time.monotonic()
        try:
            seen = await announced()
        except errors.NotReady:
            if self._answering:
                log.warning(
                    "model registry unavailable; last known set kept (age %s s)", self.age()
                )
            self._answering = False
            if self._known_at is None:  # never answered: the configured ones are all we know
                self._known = {m: ModelSeen(m, p, 0, 0.0) for m, p in self.configured.items()}
            return
        models = {m: ModelSeen(m, parent, 0, 0.0) for m, parent in self.configured.items()}
        for model in seen:
            models[model.id] = model
        self._known, self._known_at, self._answering = models, time.time(), True

    def age(self) -> float | None:
        """Seconds since the registry last answered (None: never; 0 in the embedded mode)."""
        if self.announced is None:
            return 0.0
        return None if self._known_at is None else round(time.time() - self._known_at, 3)

    @property
    def answering(self) -> bool:
        """Whether the latest read of the registry was answered (True in the embedded mode)."""
        return self.announced is None or self._answering

    async def live(self) -> list[ModelSeen]:
        """The models a request can be answered by now, by id (as last known while the
        registry does not answer)."""
        return sorted(
            (m for m in (await self.snapshot()).values() if m.live_workers > 0),
            key=lambda m: m.id,
        )

    async def check(self, model: str, served: ServedModel | None = None) -> ModelSeen:
        """The model a request names, or ModelNotFound / NotReady / ModelUnavailable; a
        known one is noted in `served` (a model with no live worker too: the request
        asked for it)."""
        seen = (await self.snapshot()).get(model)
        if seen is not None and served is not None:
            served.id, served.parent = seen.id, seen.parent
        if not self.answering and (seen is not None or self._known_at is None):
            raise errors.NotReady(
                "The model registry is unavailable; retry later.",
                retry_after=REGISTRY_RETRY_AFTER,
            )
        if seen is None:
            raise errors.ModelNotFound("The requested model does not exist.", param="model")
        if seen.live_workers <= 0:
            raise errors.ModelUnavailable(
                "No worker serves the requested model right now; retry later.",
                param="model",
                retry_after=UNAVAILABLE_RETRY_AFTER,
            )
        return seen
