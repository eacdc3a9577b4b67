-- Multi-resource lock: extend every key, only if this owner still holds all of them here.
-- KEYS = lock keys; ARGV[1] = owner token, ARGV[2] = new ttl in ms.
-- Sharded lock: ARGV[3] = the last topology epoch under which this hold may be extended
-- (src/sharded/mod.rs, "Extensions"), ARGV[4], ARGV[5] = the epoch it was granted under and its
-- spec's digest, ARGV[6] = for a hold granted in a joint phase, the digest of that change's
-- final spec (else empty); KEYS[1] is then the group's topology hash. Refuses with the error
-- STALETOPOLOGY when the stored epoch is past ARGV[3], or past ARGV[4] with another spec than
-- that final one; with TOPOLOGYCONFLICT when ARGV[4] is stored with another spec.
-- Sharded: refuses with TOPOLOGYUNSEALED when the topology hash has no seal generation (gen;
-- src/sharded/seal.rs), and answers {1, gen} when extended (the client counts it only if gen
-- names the server process it knows there).
-- Never re-creates an expired key and never deletes. Returns 1 if extended, 0 otherwise.
local first = 1
local sealed = false
if ARGV[3] then
  first = 2
  -- piece: topology_check KEYS[1]
  if stored > tonumber(ARGV[3]) then
    return redis.error_reply('STALETOPOLOGY stored epoch ' .. stored .. ', hold extendable to ' .. ARGV[3])
  end
  if t[2] and stored == tonumber(ARGV[4]) and t[2] ~= ARGV[5] then
    return redis.error_reply('TOPOLOGYCONFLICT epoch ' .. stored .. ' pins another spec here')
  end
  if t[2] and stored > tonumber(ARGV[4]) and t[2] ~= ARGV[6] then
    return redis.error_reply('STALETOPOLOGY epoch ' .. stored .. ' is not the final of this hold')
  end
end
for i = first, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return 0
  end
end
for i = first, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
if sealed then
  return {1, sealed}
end
return 1
