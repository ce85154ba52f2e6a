-- KEYS: stream, target (then, for done: results hash, results order, results count).
-- ARGV: group, entry id, owner ('' = any), action, then: for done, the order key and
-- the result record; for add, field, value...
-- action: done (INCR target; with a record (not ''), HSET it under the order key and
-- ZADD that key, counting a new key in results count, so a param is never done without
-- its result nor its result kept without it being done, and a result deleted later is
-- known as lost),
-- add (XADD target the fields), drop (nothing more).
-- Returns 1 when settled, 0 when the entry is no longer pending, -1 when another owns it.
-- Only a settle that acks writes: a late ack (its entry settled meanwhile) writes nothing.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == 'done' then
  redis.call('INCR', KEYS[2])
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
    if redis.call('ZADD', KEYS[4], 0, ARGV[5]) == 1 and KEYS[5] then
      redis.call('INCR', KEYS[5])
    end
  end
elseif ARGV[4] == 'add' then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
end
return 1
