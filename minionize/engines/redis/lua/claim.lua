-- KEYS: stream. ARGV: group, consumer, min idle ms, start id, count, then the ids this
-- consumer runs (never claimed: claiming raises the delivery count, that is, an attempt).
-- Claims up to count entries idle that long; returns {next start, {id, fields, delivery
-- count}, ...}; next start is '' when the whole pending list was scanned. Entries
-- deleted meanwhile are acked away.
local mine = {}
for i = 6, #ARGV do mine[ARGV[i]] = true end
local want = tonumber(ARGV[5])
local scan = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', want * 4 + 10)
local out = {''}
local taken = 0
for _, p in ipairs(scan) do
  if taken >= want then out[1] = p[1]; return out end
  if not (p[2] == ARGV[2] and mine[p[1]]) then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], p[1])
    if #c > 0 then
      if c[1][2] then
        local q = redis.call('XPENDING', KEYS[1], ARGV[1], p[1], p[1], 1)
        table.insert(out, {c[1][1], c[1][2], q[1][4]})
        taken = taken + 1
      else
        redis.call('XACK', KEYS[1], ARGV[1], p[1])
      end
    end
  end
end
if #scan >= want * 4 + 10 then out[1] = '(' .. scan[#scan][1] end
return out
