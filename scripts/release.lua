-- Delete the lock only if this owner still holds it (compare-and-delete), and announce it.
-- KEYS[1] = lock key; ARGV[1] = owner token.
-- ARGV[2], ARGV[3] (optional, both or neither) = channel to PUBLISH the release on and its
-- payload (a release id): waiters subscribed to it try again at once. Rollbacks of failed rounds
-- leave them out; so do primitives that pass one extra argument of their own (fair, write).
-- Returns 1 if deleted, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] and ARGV[3] then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0
