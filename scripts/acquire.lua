-- Acquire a Redlock on one master, and (when fencing is on) take the next fencing token.
-- KEYS[1] = lock key, KEYS[2] = fencing counter of the namespace,
-- KEYS[3] (optional) = the resource's waiter marker, set when this caller will wait for a
-- release message if refused (notify.rs): the release then PUBLISHes; without it, it does not.
-- It lives as long as the longer of this caller's ttl and the lock's remaining PTTL.
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter
-- Returns -1 when the key is held by anyone (including an older round of ours), else the new
-- counter value (0 when fencing is off). Atomic on this master, so the counter only moves for
-- a grant, and a refusal marks the waiter before any later release can run.
-- Returns -2, touching nothing, when fencing is on and the counter is missing: the master lost
-- it (restart without data, flush, eviction) and must be re-sealed before it votes.
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return -2
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] == '1' then
    return redis.call('INCR', KEYS[2])
  end
  return 0
end
if KEYS[3] then
  -- The marker must outlive the holder's lock, not the waiter's ttl: a shorter one expires
  -- before the release, which then does not PUBLISH, and the waiter falls back to polling.
  local ttl = math.max(tonumber(ARGV[2]), redis.call('PTTL', KEYS[1]))
  redis.call('SET', KEYS[3], '1', 'PX', ttl)
end
return -1
