"""The lease side of a Redis store of background work (study reads, background
responses): the running set (id -> last renewal) renewed by the gateway running each
record, and the claim of a stale one by another gateway (`scripts.claim_orphan_script`).
The sweep that calls these is `service.serving.leases`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from service.redis.connection import connect


class Owned(Protocol):
    owner: str | None


W = TypeVar("W", bound=Owned)


class LeasedRecords(Generic[W]):
    """Its records live at `record_key(id)`, their running set at `running`;
    `update_script` and `claim_script` are the store's own (what makes a record active
    and terminal is the store's)."""

    def __init__(
        self,
        url: str,
        ttl: int,
        running: str,
        record_key: Callable[[str], str],
        decode: Callable[[bytes | str], W],
        update_script: str,
        claim_script: str,
    ) -> None:
        self.redis = connect(url)
        self.ttl = ttl
        self._running = running
        self._record_key = record_key
        self._decode = decode
        self._update = self.redis.register_script(update_script)
        self._claim = self.redis.register_script(claim_script)

    async def renew(self, work_id: str, owner: str) -> None:
        await self.redis.zadd(self._running, {work_id: time.time()}, xx=True)

    async def claim_orphan(self, owner: str, stale_after: float) -> W | None:
        now = time.time()
        raw = await self._claim(
            keys=[self._running], args=[now - stale_after, now, self._record_key("")]
        )
        if not raw:
            return None
        record = self._decode(raw)
        record.owner = owner
        return record

    async def close(self) -> None:
        await self.redis.aclose()
