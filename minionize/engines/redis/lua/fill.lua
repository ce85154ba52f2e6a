-- KEYS: stream, ids set. ARGV: param id, text, param id, text... Adds each param whose
-- id is new (SADD and XADD together); returns how many were added.
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'param', ARGV[i + 1], 'origin', ARGV[i])
    added = added + 1
  end
end
return added
