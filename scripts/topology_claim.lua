-- Sharded lock, sealing a master's topology, step 1 of 2: claim the topology hash before the
-- other masters' states are read (src/sharded/seal.rs). The hash (KEYS[1]) keeps, besides the
-- topology, the generation it was sealed with in field gen ("<run_id>:<random>", new at every
-- seal) and a pending claim in field claim. A claim removes gen, so from now on this master
-- does not vote in sharded acquires, extends or topology writes until a seal
-- (topology_seal.lua) presents this very claim; a flush or another seal in between removes or
-- replaces it, and the late seal is refused.
-- KEYS[1] = topology hash; ARGV[1] = the master's run_id, ARGV[2] = a fresh random claim id.
-- Returns {gen, false} when the hash is already sealed for this process (nothing written),
-- else {false, claim}: a claim for this process already pending (another client's, adopted:
-- it was made before this call, which precedes this client's reads) or the new one.
local prefix = ARGV[1] .. ':'
local state = redis.call('HMGET', KEYS[1], 'gen', 'claim')
local gen, claim = state[1], state[2]
if gen and string.sub(gen, 1, #prefix) == prefix then
  return {gen, false}
end
if not (claim and string.sub(claim, 1, #prefix) == prefix) then
  claim = prefix .. ARGV[2]
  redis.call('HSET', KEYS[1], 'claim', claim)
end
if gen then
  redis.call('HDEL', KEYS[1], 'gen')
end
return {false, claim}
