-- Extend the lock only if this owner still holds it (compare-and-PEXPIRE).
-- KEYS[1] = lock key; ARGV[1] = owner token; ARGV[2] = new ttl in ms.
-- Never re-creates an expired key (someone else may hold the lock by now) and never deletes.
-- Returns 1 if extended, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
