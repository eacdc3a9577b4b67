-- Extend a lock taken with a lock-delay, only if this owner still holds it.
-- KEYS[1] = lock key; ARGV[1] = owner token; ARGV[2] = new ttl in ms; ARGV[3] = lock-delay in ms.
-- The key lives ttl + delay: past the holder's ttl it is the tombstone that keeps the lock
-- unavailable for the delay if the holder vanishes without releasing. Extending moves the whole
-- window (ttl and delay) forward, by this master's own clock (its key expiry).
-- Never re-creates an expired key and never deletes. Returns 1 if extended, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
end
return 0
