-- Reentrant lock: remove this hold; delete the hash when the owner has no hold left.
-- KEYS[1] = lock hash; ARGV[1] = hold token, ARGV[2] = owner id.
-- Also the rollback of a failed acquire round: it removes exactly the hold that round added.
-- Returns 1 if this hold was there, 0 otherwise.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then
  return 0
end
local removed = redis.call('HDEL', KEYS[1], 'hold:' .. ARGV[1])
if redis.call('HLEN', KEYS[1]) <= 1 then
  redis.call('DEL', KEYS[1])
end
return removed
