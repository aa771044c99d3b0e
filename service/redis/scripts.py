"""Lua run inside Redis by the queue: one round trip for each side of a job's entry.

ADMIT_SCRIPT (gateway, per request)
  KEYS: lane stream, wake list, then one key per image.
  ARGV: group, max depth, ttl, job document, enqueued-at, job id, image refs
        (space-separated), reply-to inbox, then the images' bytes.
  Counts the lane's waiting entries (length minus delivered-and-unacked); at
  `max depth` it returns that count and stores nothing. Otherwise it stores each
  image once (SET NX, TTL refreshed), appends the entry, pushes a wake token and
  returns -1.

TAKE_SCRIPT (worker, per take: up to `limit` jobs)
  KEYS: the lane streams.
  ARGV: now, aging seconds, group, consumer, reclaim idle ms (0: don't), ttl,
        the key prefixes of delivery counters, cancel flags and images
        (`keys.tries("")`, ...), pop wake (1: the caller holds no wake token),
        limit, then each lane's rank (`Lane.rank`), in KEYS order, then each
        lane's model's wake list, in KEYS order.
  First, when asked, takes over one entry idle longer than the visibility
  timeout (XAUTOCLAIM: its worker died) and returns it alone. Otherwise, up to
  `limit` times: looks at the next undelivered entry of every lane, chooses the
  best by `rank - waited / aging_seconds` (`core.lanes.effective_rank`; ties:
  the older), and delivers it with XREADGROUP, atomically, so two workers never
  race for the same head; then, still atomically, counts the delivery, reads the
  cancel flag and fetches the images. Returns {more, delivery, ...}, each
  delivery {stream, entry id, job document, reply-to, deliveries, cancelled,
  reclaimed, {image bytes or false}}, or nil when nothing was waiting; `more` is
  1 when another undelivered entry is waiting (take again at once), 0 when none
  is (wait on the wake list). A wake token stands for a submitted, undelivered
  entry: each delivery consumes one, the first the token the caller popped to
  wake unless pop wake is 1, the others popped here, so a worker told "no more"
  blocks until the next submit instead of asking again. Reclaimed entries
  pushed no token and consume none.

The take script builds per-job key names from the prefixes it is given (see
`keys`); that is fine on a single Redis or a replicated one, not on Redis Cluster.
"""

ADMIT_SCRIPT = """
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if waiting >= tonumber(ARGV[2]) then return waiting end
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 6], 'EX', ARGV[3], 'NX')
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[4], 't', ARGV[5], 'id', ARGV[6],
           'img', ARGV[7], 'reply', ARGV[8])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 1023)
return -1
"""

TAKE_SCRIPT = """
local group, consumer, ttl = ARGV[3], ARGV[4], ARGV[6]
local tries_prefix, cancel_prefix, image_prefix = ARGV[7], ARGV[8], ARGV[9]
local now, aging = tonumber(ARGV[1]), tonumber(ARGV[2])
local pop_wake, limit, nkeys = ARGV[10] == '1', tonumber(ARGV[11]), #KEYS

local function deliver(key, entry, reclaimed)
  local f = {}
  for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
  local tries_key = tries_prefix .. f['id']
  local tries = redis.call('INCR', tries_key)
  redis.call('EXPIRE', tries_key, ttl)
  local cancelled = redis.call('EXISTS', cancel_prefix .. f['id'])
  local images = {}
  for ref in string.gmatch(f['img'], '%S+') do
    images[#images + 1] = redis.call('GET', image_prefix .. ref)
  end
  return {key, entry[1], f['job'], f['reply'], tries, cancelled, reclaimed, images}
end

if tonumber(ARGV[5]) > 0 then
  for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
      local claimed = redis.call('XAUTOCLAIM', key, group, consumer, ARGV[5], '0-0', 'COUNT', 1)
      local entry = claimed[2][1]
      if entry and entry[2] then
        -- no token was pushed for this delivery: give back the one the caller popped
        if not pop_wake then redis.call('LPUSH', ARGV[11 + nkeys + i], '1') end
        return {1, deliver(key, entry, 1)}
      end
    end
  end
end

-- The best undelivered head across the lanes: its lane's index, and whether
-- another entry than that head is waiting.
local function best_head()
  local best, best_t, best_i, heads, more = nil, nil, nil, 0, 0
  for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
      local last = '0-0'
      for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
        local name, lastid
        for j = 1, #g, 2 do
          if g[j] == 'name' then name = g[j + 1] end
          if g[j] == 'last-delivered-id' then lastid = g[j + 1] end
        end
        if name == group then last = lastid end
      end
      local nxt = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 2)
      if #nxt > 1 then more = 1 end
      if #nxt > 0 then
        heads = heads + 1
        local fields, t = nxt[1][2], 0
        for j = 1, #fields, 2 do
          if fields[j] == 't' then t = tonumber(fields[j + 1]) end
        end
        local rank = tonumber(ARGV[11 + i]) - (now - t) / aging
        if best == nil or rank < best or (rank == best and t < best_t) then
          best, best_t, best_i = rank, t, i
        end
      end
    end
  end
  if heads > 1 then more = 1 end
  return best_i, more
end

local out, more = {0}, 0
for n = 1, limit do
  local i
  i, more = best_head()
  if i == nil then break end
  if pop_wake or n > 1 then redis.call('LPOP', ARGV[11 + nkeys + i]) end
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
                          'STREAMS', KEYS[i], '>')
  out[#out + 1] = deliver(KEYS[i], read[1][2][1], 0)
end
if #out == 1 then return nil end
out[1] = more
return out
"""

# Per-tenant limits (service.redis.tenant_limits); times come from Redis's own
# clock (TIME), so gateways with skewed clocks still share one window.
#
# TENANT_ACQUIRE_SCRIPT
#   KEYS: requests zset, tokens zset, leases zset (see redis_keys.tenant_*).
#   ARGV: window seconds, rpm, tpm, max concurrent (-1: no limit), tokens to charge,
#         hold seconds, lease id.
#   Drops what left the window (and expired leases), checks the limits in order,
#   and either charges all three and returns {'ok'}, or charges nothing and
#   returns {limit name, seconds until retry}.
# TENANT_RELEASE_SCRIPT
#   KEYS: tokens zset, leases zset.  ARGV: lease id, charged tokens, used tokens (-1: keep).

TENANT_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local horizon = now - window
local rpm, tpm, cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, hold, id = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if rpm >= 0 and redis.call('ZCARD', KEYS[1]) + 1 > rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local at = oldest[2] and tonumber(oldest[2]) or now
  return {'requests_per_minute', tostring(at + window - now)}
end
if tpm >= 0 then
  local charges = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local used = 0
  for i = 1, #charges, 2 do
    used = used + tonumber(string.match(charges[i], ':(%-?%d+)$'))
  end
  if used + tokens > tpm then
    local excess, freed = used + tokens - tpm, 0
    for i = 1, #charges, 2 do
      freed = freed + tonumber(string.match(charges[i], ':(%-?%d+)$'))
      if freed >= excess then
        return {'tokens_per_minute', tostring(tonumber(charges[i + 1]) + window - now)}
      end
    end
    return {'tokens_per_minute', tostring(window)}
  end
end
if cap >= 0 and redis.call('ZCARD', KEYS[3]) + 1 > cap then
  return {'max_concurrent_requests', '1'}
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('ZADD', KEYS[2], now, id .. ':' .. tokens)
redis.call('ZADD', KEYS[3], now + hold, id)
local ttl = math.ceil(math.max(window, hold)) + 1
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return {'ok'}
"""

TENANT_RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[1])
if tonumber(ARGV[3]) >= 0 then
  local charged = ARGV[1] .. ':' .. ARGV[2]
  local at = redis.call('ZSCORE', KEYS[1], charged)
  if at then
    redis.call('ZREM', KEYS[1], charged)
    redis.call('ZADD', KEYS[1], at, ARGV[1] .. ':' .. ARGV[3])
  end
end
return 1
"""


def lua_set(names: frozenset[str]) -> str:
    """A Lua table literal with `names` as keys (statuses, for membership tests)."""
    return "{" + ", ".join(f"['{n}'] = true" for n in sorted(names)) + "}"


def claim_orphan_script(status: str, active: frozenset[str]) -> str:
    """The claim of leased background work (study reads, background responses).
    KEYS: the running set (id -> last renewal). ARGV: stale-before time, now, record
    key prefix. The oldest stale entry whose record is still `active` is re-scored
    (claimed) and its record returned; stale ids whose record expired or ended are
    dropped on the way. `status`: the Lua expression of a decoded record's status."""
    return f"""
local active = {lua_set(active)}
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 10)
for _, id in ipairs(stale) do
  local record = redis.call('GET', ARGV[3] .. id)
  local status = record and {status.format(record="cjson.decode(record)")}
  if status and active[status] then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), id)
    return record
  end
  redis.call('ZREM', KEYS[1], id)
end
return false
"""
