-- Read-write lock: withdraw this writer's intent and delete the write lock if this owner holds
-- it (compare-and-delete).
-- KEYS[1] = writer key, KEYS[3] = waiting writers; ARGV[1] = owner token, ARGV[2] = writer id.
-- Returns 1 if the write lock was deleted, 0 otherwise.
redis.call('ZREM', KEYS[3], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
