-- Delete the lock only if this owner still holds it (compare-and-delete), and announce it if
-- someone waits.
-- KEYS[1] = lock key; ARGV[1] = owner token.
-- KEYS[2], ARGV[2], ARGV[3] (optional, all or none) = the resource's waiter marker (set by
-- refused acquires of waiters, acquire.lua), the channel to PUBLISH the release on and its
-- payload (a release id): when the marker is there (a string 'redquorum:waiting'), it is
-- deleted with the lock and waiters subscribed to the channel try again at once; when it is
-- not, nobody waits and nothing is published. A key of the marker's name with any other value
-- or type is not ours (a peer's lock) and is never touched. Rollbacks of failed rounds leave
-- them out; so do primitives that pass one extra argument of their own (fair, write).
-- Returns 1 if deleted, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if KEYS[2] and ARGV[2] and ARGV[3] and redis.call('TYPE', KEYS[2]).ok == 'string'
      and redis.call('GET', KEYS[2]) == 'redquorum:waiting' then
    redis.call('DEL', KEYS[2])
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0
