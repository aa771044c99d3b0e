"""A stored response (`POST /v1/responses` with `store: true`) and the store that keeps it.

A record is the `response` object clients see, the input items kept for it, and
what only the server needs: who may see it (its tenant and, when a user signed in
with an IdP's token created it, that user), the gateway running it in the
background, and what to run again if that gateway goes away.

`ResponseStore` semantics (both implementations pass tests/service/responses/test_store.py):
- `create(record)` stores a new record with its input items.
- `get(id, viewer)` returns the record without its input items, or None: unknown,
  expired, or not the viewer's (`visible`: another tenant's, or another user's;
  nobody learns that someone else's ids exist).
- `get_input(id, viewer)` returns the input items kept for it (same None rules).
- `update(record)` replaces the record (not its input items) unless the stored one
  is terminal (`completed`, `incomplete`, `failed`, `cancelled`): then False, so a
  cancel on one gateway is never overwritten by the gateway still generating.
- `delete(id, viewer)` removes record and input items; False when nothing was there.
- `renew(id, owner)` is a background response's heartbeat from the gateway running it;
  `claim_orphan(owner, stale_after)` (Redis) hands another gateway a queued or
  in-progress background response whose gateway stopped renewing it.

The in-memory store lives and dies with its process (the embedded default), holds
at most `max_responses` (the oldest finished ones are evicted first) and forgets a
record after `ttl` seconds; `service.redis.response_store` keeps records in Redis
with the same TTL (`GMAIVL_RESPONSE_TTL`), so any gateway replica answers.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from service.core.leases import OneProcessLeases

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "incomplete", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"queued", "in_progress"})  # a background response at work


@dataclass(frozen=True)
class Viewer:
    """Who asks: a tenant (None: auth off) and, for a user signed in with an IdP's
    access token, that user (`Identity.digest`: a digest of iss and sub, not the sub)."""

    tenant: str | None
    user: str | None = None


@dataclass
class StoredResponse:
    id: str
    response: dict[str, Any]  # the `response` object as clients see it (its `status` included)
    tenant: str | None = None
    user: str | None = None  # created with a user's token: only that user sees it
    input_items: list[dict[str, Any]] = field(default_factory=list)  # empty when read by get()
    run: dict[str, Any] | None = None  # background: what another gateway needs to run it again
    owner: str | None = None  # the gateway running it (background)
    created: float = field(default_factory=time.time)

    @property
    def creator(self) -> Viewer:
        """Who created it (a background response taken over runs as them)."""
        return Viewer(self.tenant, self.user)

    @property
    def status(self) -> str:
        return str(self.response.get("status"))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def record_json(self) -> str:
        """The record without its input items (those are kept apart: images are large)."""
        data = asdict(self)
        del data["input_items"]
        return json.dumps(data, separators=(",", ":"))

    def input_json(self) -> str:
        return json.dumps(self.input_items, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredResponse:
        return cls(**json.loads(raw))


def visible(record: StoredResponse | None, viewer: Viewer) -> bool:
    """Whether `viewer` may see `record`: its own tenant's only (None: auth off); one
    created with a user's token, that user's only (not the tenant's keys, not other
    users); one created with a key, anyone of its tenant."""
    return (
        record is not None
        and record.tenant == viewer.tenant
        and (record.user is None or record.user == viewer.user)
    )


class ResponseStore(Protocol):
    async def create(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str, viewer: Viewer) -> StoredResponse | None: ...

    async def get_input(self, response_id: str, viewer: Viewer) -> list[dict[str, Any]] | None: ...

    async def update(self, record: StoredResponse) -> bool: ...

    async def delete(self, response_id: str, viewer: Viewer) -> bool: ...

    async def renew(self, response_id: str, owner: str) -> None: ...

    async def claim_orphan(self, owner: str, stale_after: float) -> StoredResponse | None: ...

    async def close(self) -> None: ...


class InMemoryResponseStore(OneProcessLeases):
    """Records in an ordered dict (oldest first): the embedded default. Bounded by
    `max_responses`; the oldest finished records go first, then the oldest at all."""

    def __init__(self, max_responses: int = 1000, ttl: float = 3600.0) -> None:
        self.max_responses = max_responses
        self.ttl = ttl
        # JSON, so callers never share a mutable record; (record, input items, expiry)
        self._records: OrderedDict[str, tuple[str, str, float]] = OrderedDict()

    async def create(self, record: StoredResponse) -> None:
        self._records[record.id] = (
            record.record_json(),
            record.input_json(),
            time.monotonic() + self.ttl,
        )
        if len(self._records) > self.max_responses:
            self._evict()

    def _live(self, response_id: str) -> tuple[str, str, float] | None:
        entry = self._records.get(response_id)
        if entry is not None and entry[2] <= time.monotonic():
            del self._records[response_id]
            return None
        return entry

    async def get(self, response_id: str, viewer: Viewer) -> StoredResponse | None:
        entry = self._live(response_id)
        record = StoredResponse.from_json(entry[0]) if entry is not None else None
        return record if visible(record, viewer) else None

    async def get_input(self, response_id: str, viewer: Viewer) -> list[dict[str, Any]] | None:
        if await self.get(response_id, viewer) is None:
            return None
        return json.loads(self._records[response_id][1])

    async def update(self, record: StoredResponse) -> bool:
        entry = self._live(record.id)
        if entry is None or StoredResponse.from_json(entry[0]).terminal:
            return False
        self._records[record.id] = (record.record_json(), entry[1], entry[2])
        return True

    async def delete(self, response_id: str, viewer: Viewer) -> bool:
        if await self.get(response_id, viewer) is None:
            return False
        del self._records[response_id]
        return True

    def _evict(self) -> None:
        for response_id in list(self._records):
            if len(self._records) <= self.max_responses:
                return
            if StoredResponse.from_json(self._records[response_id][0]).terminal:
                del self._records[response_id]
        while len(self._records) > self.max_responses:
            self._records.popitem(last=False)
