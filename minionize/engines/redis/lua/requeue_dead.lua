-- KEYS: dead stream, stream. ARGV: count. Moves up to count dead letters back, attempts
-- reset; returns how many.
local drop = {reason=1, attempt=1, entry=1, consumer=1, time=1, tries=1}
local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])) do
  if redis.call('XDEL', KEYS[1], e[1]) == 1 then
    local fields = {}
    for i = 1, #e[2], 2 do
      if not drop[e[2][i]] then
        table.insert(fields, e[2][i]); table.insert(fields, e[2][i + 1])
      end
    end
    table.insert(fields, 'tries'); table.insert(fields, '0')
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    n = n + 1
  end
end
return n
