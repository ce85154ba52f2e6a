-- KEYS: results order (a sorted set of order keys, all of score 0), results hash (order
-- key -> record). ARGV: start (a ZRANGEBYLEX bound: '-' or '(' .. the last key read),
-- count, max bytes. Returns {key, record, key, record, ...} in queue order: at most count
-- records, and no more once their size reaches max bytes (always at least one), so that
-- one reply stays small however large the results are; {} after the last one.
local keys = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, ARGV[2])
local out, size, budget = {}, 0, tonumber(ARGV[3])
for _, key in ipairs(keys) do
  if size >= budget then break end
  local record = redis.call('HGET', KEYS[2], key)
  table.insert(out, key)
  table.insert(out, record or false)
  if record then size = size + #record end
end
return out
