-- Sharded lock: compare-and-delete every key this owner holds here (also the rollback).
-- KEYS[1] = topology hash (not touched: giving a hold back is safe under any topology),
-- KEYS[2..] = lock keys; ARGV[1] = owner token (further arguments are ignored).
-- Returns 1 if any key was deleted, 0 otherwise.
local deleted = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    deleted = 1
  end
end
return deleted
