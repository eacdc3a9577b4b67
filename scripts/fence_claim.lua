-- Fencing seal, step 1 of 2: claim the master's fencing hash for a seal, before the counters of
-- the other masters are read. The hash (KEYS[1]) keeps the counter in field n, the generation it
-- was sealed with in field gen ("<run_id>:<random>", new at every seal), and a pending claim in
-- field claim. A claim removes gen, so from now on no vote of this master counts until a seal
-- (fence_seal.lua) presents this very claim; a flush, an eviction or another seal in between
-- removes or replaces it, and the late seal is refused (fencing.rs).
-- KEYS[1] = fencing hash; ARGV[1] = the master's run_id, ARGV[2] = a fresh random claim id.
-- A counter left by an older version as a plain string is converted (kept as n, unsealed).
-- Returns {n or false, gen, false} when the hash is already sealed for this process (nothing
-- written), else {n or false, false, claim}: a claim for this process already pending (another
-- client's, adopted: it was made before this call, which precedes this client's counter reads)
-- or the new one.
local prefix = ARGV[1] .. ':'
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  local old = redis.call('GET', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'n', old)
end
local state = redis.call('HMGET', KEYS[1], 'n', 'gen', 'claim')
local n, gen, claim = state[1], state[2], state[3]
if n and gen and string.sub(gen, 1, #prefix) == prefix then
  return {n, gen, false}
end
if not (claim and string.sub(claim, 1, #prefix) == prefix) then
  claim = prefix .. ARGV[2]
  redis.call('HSET', KEYS[1], 'claim', claim)
end
if gen then
  redis.call('HDEL', KEYS[1], 'gen')
end
return {n or false, false, claim}
