-- Release a lock taken with a lock-delay: compare-and-delete, so a released lock (unlike an
-- abandoned one) is free at once, and announce it.
-- KEYS[1] = lock key; ARGV[1] = owner token; ARGV[2] = lock-delay in ms (unused here: the
-- shared argument of the hold's scripts); ARGV[3], ARGV[4] (optional, both or neither) = channel
-- to PUBLISH the release on and its payload (a release id).
-- Returns 1 if deleted, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  -- piece: delete_and_announce KEYS[1]
  return 1
end
return 0
