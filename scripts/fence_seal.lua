-- Fencing seal, step 2 of 2: counter = max(counter, seed) and a new generation, only if the
-- claim this seed was computed after (fence_claim.lua) is still the pending one: a seal that
-- arrives after a flush, an eviction or another seal of this master is refused, so a late seal
-- can never re-seal a master with an old seed (fencing.rs).
-- KEYS[1] = fencing hash; ARGV[1] = seed, ARGV[2] = the claim, ARGV[3] = the new generation
-- ("<run_id>:<random>").
-- Returns the counter after the call, or -1, touching nothing, when the claim is gone.
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[2] then
  return -1
end
local n = redis.call('HGET', KEYS[1], 'n') or '0'
if tonumber(n) < tonumber(ARGV[1]) then
  n = ARGV[1]
end
redis.call('HSET', KEYS[1], 'n', n, 'gen', ARGV[3])
redis.call('HDEL', KEYS[1], 'claim')
return tonumber(n)
