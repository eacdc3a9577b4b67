-- Fair lock: leave the queue and delete the lock if this owner holds it (compare-and-delete).
-- KEYS[1] = lock key, KEYS[2] = waiter queue, KEYS[3] = waiter deadlines
-- ARGV[1] = owner token, ARGV[2] = waiter id. Returns 1 if the lock was deleted, 0 otherwise.
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
