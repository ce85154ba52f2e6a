-- KEYS: stream. ARGV: group, min idle ms, cursor, count. Puts entries whose lease expired
-- back at the end of the stream, the lost attempt counted; returns {next cursor, n}. The
-- copy's 'first' field keeps the id of the param's first entry (its place in the queue).
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], 'minion-queue', ARGV[2], ARGV[3],
                    'COUNT', ARGV[4])
local n = 0
for _, e in ipairs(r[2]) do
  if e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local fields, tries, origin, first = {}, 0, e[1], e[1]
    for i = 1, #e[2], 2 do
      local k, v = e[2][i], e[2][i + 1]
      if k == 'tries' then tries = tonumber(v) or 0
      elseif k == 'origin' then origin = v
      elseif k == 'first' then first = v
      else table.insert(fields, k); table.insert(fields, v) end
    end
    local counted = tries + p[1][4] - 1
    table.insert(fields, 'origin'); table.insert(fields, origin)
    table.insert(fields, 'tries'); table.insert(fields, tostring(counted))
    table.insert(fields, 'first'); table.insert(fields, first)
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
    redis.call('XDEL', KEYS[1], e[1])
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    n = n + 1
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], 'minion-queue')
return {r[1], n}
