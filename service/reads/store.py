"""Where study reads are kept.

`ReadStore` semantics (both implementations pass the same tests):
- `create(read)` stores a new record; `get(id)` returns it or None (unknown or expired).
- `update(read)` replaces a record unless the stored one is already terminal
  (`model.TERMINAL`: completed, failed, cancelled): it returns False then, so a read
  cancelled on one gateway is never overwritten by the gateway still running it.
- `put_sr(id, data)` / `get_sr(id)` keep the SR's Part 10 bytes beside the record.
- `claim_orphan(owner, stale_after)` (Redis) hands a gateway a read whose owner
  stopped renewing it; `renew(id, owner)` is the owner's heartbeat.

The in-memory store lives and dies with its process (the embedded default);
`service.redis.read_store` keeps records in Redis with a TTL, so any gateway
answers for any read and a gateway restart loses nothing.
"""

from __future__ import annotations

from typing import Protocol

from service.core.leases import OneProcessLeases
from service.reads.model import Read


class ReadStore(Protocol):
    async def create(self, read: Read) -> None: ...

    async def get(self, read_id: str) -> Read | None: ...

    async def update(self, read: Read) -> bool: ...

    async def put_sr(self, read_id: str, data: bytes) -> None: ...

    async def get_sr(self, read_id: str) -> bytes | None: ...

    async def renew(self, read_id: str, owner: str) -> None: ...

    async def claim_orphan(self, owner: str, stale_after: float) -> Read | None: ...

    async def close(self) -> None: ...


class InMemoryReadStore(OneProcessLeases):
    """Records in a dict: the embedded default (lost on restart, docs/pacs.md).
    Bounded: the oldest terminal reads are dropped beyond `max_reads`."""

    def __init__(self, max_reads: int = 10_000) -> None:
        self.max_reads = max_reads
        self._reads: dict[str, str] = {}  # JSON, so callers never share a mutable record
        self._srs: dict[str, bytes] = {}

    async def create(self, read: Read) -> None:
        self._reads[read.id] = read.to_json()
        if len(self._reads) > self.max_reads:
            self._evict()

    async def get(self, read_id: str) -> Read | None:
        raw = self._reads.get(read_id)
        return Read.from_json(raw) if raw is not None else None

    async def update(self, read: Read) -> bool:
        current = await self.get(read.id)
        if current is None or current.terminal:
            return False
        self._reads[read.id] = read.to_json()
        return True

    async def put_sr(self, read_id: str, data: bytes) -> None:
        self._srs[read_id] = data

    async def get_sr(self, read_id: str) -> bytes | None:
        return self._srs.get(read_id)

    def _evict(self) -> None:
        for read_id in list(self._reads):
            if len(self._reads) <= self.max_reads:
                return
            if Read.from_json(self._reads[read_id]).terminal:
                del self._reads[read_id]
                self._srs.pop(read_id, None)
