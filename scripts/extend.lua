-- Extend the lock only if this owner still holds it (compare-and-PEXPIRE).
-- KEYS[1] = lock key; ARGV[1] = owner token; ARGV[2] = new ttl in ms.
-- KEYS[2] (optional) = the resource's waiter marker: when a waiter marked the lock (a string
-- 'redquorum:waiting', acquire.lua) and it would expire before the extended lock, it is made to
-- live as long, so the release still finds it and wakes the waiter. Any other key of that name
-- is not ours and is left alone.
-- Never re-creates an expired key (someone else may hold the lock by now) and never deletes.
-- Returns 1 if extended, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local extended = redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if KEYS[2] and redis.call('TYPE', KEYS[2]).ok == 'string'
      and redis.call('GET', KEYS[2]) == 'redquorum:waiting'
      and redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  return extended
end
return 0
