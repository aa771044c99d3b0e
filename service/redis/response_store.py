"""RedisResponseStore: stored responses as Redis records with a TTL
(`service.responses.store` has the semantics). Any gateway replica answers for any
response; a background response whose gateway stops renewing it (its
`resp:running` score older than the lease) is claimed by another gateway.

`update` is one script: it refuses to overwrite a terminal record (a cancel wins
over the gateway still generating), keeps the record's TTL, and keeps the running
set in step with the status.
"""

from __future__ import annotations

import json
import time
from typing import Any

from service.redis import keys
from service.redis.leases import LeasedRecords
from service.redis.scripts import claim_orphan_script, lua_set
from service.responses.store import ACTIVE, TERMINAL, StoredResponse, Viewer, visible

# KEYS: record, running set. ARGV: new JSON, terminal (0/1), response id, now.
UPDATE_SCRIPT = f"""
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local terminal = {lua_set(TERMINAL)}
if terminal[cjson.decode(current)['response']['status']] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[4]), ARGV[3])
end
return 1
"""

CLAIM_SCRIPT = claim_orphan_script("{record}['response']['status']", ACTIVE)


class RedisResponseStore(LeasedRecords[StoredResponse]):
    def __init__(self, url: str, ttl: int) -> None:
        super().__init__(
            url,
            ttl,
            keys.RESPONSES_RUNNING,
            keys.response_record,
            StoredResponse.from_json,
            UPDATE_SCRIPT,
            CLAIM_SCRIPT,
        )

    async def create(self, record: StoredResponse) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.response_record(record.id), record.record_json(), ex=self.ttl)
            pipe.set(keys.response_input(record.id), record.input_json(), ex=self.ttl)
            if record.run is not None and not record.terminal:
                pipe.zadd(keys.RESPONSES_RUNNING, {record.id: time.time()})
            await pipe.execute()

    async def get(self, response_id: str, viewer: Viewer) -> StoredResponse | None:
        raw = await self.redis.get(keys.response_record(response_id))
        record = StoredResponse.from_json(raw) if raw is not None else None
        return record if visible(record, viewer) else None

    async def get_input(self, response_id: str, viewer: Viewer) -> list[dict[str, Any]] | None:
        if await self.get(response_id, viewer) is None:
            return None
        raw = await self.redis.get(keys.response_input(response_id))
        return json.loads(raw) if raw is not None else None

    async def update(self, record: StoredResponse) -> bool:
        done = await self._update(
            keys=[keys.response_record(record.id), keys.RESPONSES_RUNNING],
            args=[record.record_json(), int(record.terminal), record.id, time.time()],
        )
        return bool(done)

    async def delete(self, response_id: str, viewer: Viewer) -> bool:
        if await self.get(response_id, viewer) is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.response_record(response_id), keys.response_input(response_id))
            pipe.zrem(keys.RESPONSES_RUNNING, response_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)
