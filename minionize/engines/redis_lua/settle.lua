-- KEYS: stream, target. ARGV: group, entry id, owner ('' = any), action, field, value...
-- action: done (INCR target), add (XADD target the fields), drop (nothing more).
-- Returns 1 when settled, 0 when the entry is no longer pending, -1 when another owns it.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == 'done' then
  redis.call('INCR', KEYS[2])
elseif ARGV[4] == 'add' then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
end
return 1
