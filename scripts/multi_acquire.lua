-- Multi-resource lock, one master: all the keys or none of them.
-- KEYS[1] = fencing counter of the namespace, KEYS[2..] = lock keys (sorted, distinct)
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter
-- Returns -1 when any of the keys is held (by anyone, an older round of ours included), else
-- the new counter value (0 when fencing is off). Checks every key before setting any, so a
-- master never holds part of the set.
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed (fencing.rs).
local gen = false
if ARGV[3] == '1' then
  gen = redis.call('HGET', KEYS[1], 'gen')
  if not gen then
    return -2
  end
end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return -1
  end
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
if gen then
  return {redis.call('HINCRBY', KEYS[1], 'n', 1), gen}
end
return 0
