"""Lua run inside Redis by the queue.

PICK_SCRIPT (KEYS: the lane streams, highest lane first; ARGV: now, aging
seconds, group, consumer): look at the next undelivered entry of every lane,
choose the best by `lane rank - waited / aging_seconds` (ties: the older), and
deliver it to the consumer with XREADGROUP, all in one atomic step, so two
workers never race for the same head. Returns XREADGROUP's reply, or nil.
"""

PICK_SCRIPT = """
local best, best_key, best_t = nil, nil, nil
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local last = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local name, lastid
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] end
        if g[j] == 'last-delivered-id' then lastid = g[j + 1] end
      end
      if name == ARGV[3] then last = lastid end
    end
    local nxt = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)
    if #nxt > 0 then
      local fields, t = nxt[1][2], 0
      for j = 1, #fields, 2 do
        if fields[j] == 't' then t = tonumber(fields[j + 1]) end
      end
      local rank = (i - 1) - (tonumber(ARGV[1]) - t) / tonumber(ARGV[2])
      if best == nil or rank < best or (rank == best and t < best_t) then
        best, best_key, best_t = rank, key, t
      end
    end
  end
end
if best_key == nil then return nil end
return redis.call('XREADGROUP', 'GROUP', ARGV[3], ARGV[4], 'COUNT', 1, 'STREAMS', best_key, '>')
"""
