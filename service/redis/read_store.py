"""RedisReadStore: study reads as Redis records with a TTL (`service.reads.store`
has the semantics). Any gateway answers for any read; a read whose gateway stops
renewing it (`reads:running` score older than the lease) is claimed by another.

`update` is one script: it refuses to overwrite a terminal record (a cancel on one
gateway wins over the gateway still running the read) and keeps the running set
in step with the status.
"""

from __future__ import annotations

import time

from service.reads.model import ACTIVE, TERMINAL, Read
from service.redis import keys
from service.redis.leases import LeasedRecords
from service.redis.scripts import claim_orphan_script, lua_set

# KEYS: record, running set. ARGV: new JSON, ttl, terminal (0/1), read id, now.
UPDATE_SCRIPT = f"""
local terminal = {lua_set(TERMINAL)}
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if terminal[cjson.decode(current)['status']] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[4])
else
  redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), ARGV[4])
end
return 1
"""

# A DICOM node's reads (source "dimse") are never claimed, only dropped from the set
# when stale: only that node holds their files, and it resumes them from its spool when
# it restarts.
CLAIM_SCRIPT = claim_orphan_script(
    "({record}['spec']['source'] ~= 'dimse' and {record}['status'] or nil)", ACTIVE
)


class RedisReadStore(LeasedRecords[Read]):
    def __init__(self, url: str, ttl: int) -> None:
        super().__init__(
            url,
            ttl,
            keys.READS_RUNNING,
            keys.read_record,
            Read.from_json,
            UPDATE_SCRIPT,
            CLAIM_SCRIPT,
        )

    async def create(self, read: Read) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.read_record(read.id), read.to_json(), ex=self.ttl)
            pipe.zadd(keys.READS_RUNNING, {read.id: time.time()})
            await pipe.execute()

    async def get(self, read_id: str) -> Read | None:
        raw = await self.redis.get(keys.read_record(read_id))
        return Read.from_json(raw) if raw is not None else None

    async def update(self, read: Read) -> bool:
        done = await self._update(
            keys=[keys.read_record(read.id), keys.READS_RUNNING],
            args=[read.to_json(), self.ttl, int(read.terminal), read.id, time.time()],
        )
        return bool(done)

    async def put_sr(self, read_id: str, data: bytes) -> None:
        await self.redis.set(keys.read_sr(read_id), data, ex=self.ttl)

    async def get_sr(self, read_id: str) -> bytes | None:
        return await self.redis.get(keys.read_sr(read_id))
