-- Multi-resource lock: delete every key that this owner holds here (compare-and-delete each).
-- KEYS = lock keys; ARGV[1] = owner token.
-- Sharded lock: ARGV[2] is given (the hold's last extendable epoch), and KEYS[1] is then the
-- group's topology hash, not touched: giving a hold back is safe under any topology.
-- Returns 1 if this owner held the whole set here, 0 otherwise (its keys are deleted anyway).
local first = 1
if ARGV[2] then
  first = 2
end
local all = 1
for i = first, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  else
    all = 0
  end
end
return all
