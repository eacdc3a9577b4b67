-- Multi-resource lock: delete every key that this owner holds here (compare-and-delete each).
-- KEYS = lock keys; ARGV[1] = owner token.
-- Returns 1 if this owner held the whole set here, 0 otherwise (its keys are deleted anyway).
local all = 1
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  else
    all = 0
  end
end
return all
