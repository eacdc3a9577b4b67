-- Sharded lock, sealing a master's topology, step 2 of 2: merge what a quorum of sealed masters
-- (or every master) reported into this master's topology state and seal it with a new
-- generation, only if the claim the reads were made after (topology_claim.lua) is still the
-- pending one: a seal that arrives after a flush or another seal is refused
-- (src/sharded/seal.rs).
-- KEYS[1] = topology hash; ARGV[1] = the claim, ARGV[2] = the new generation
-- ("<run_id>:<random>"), ARGV[3] = the highest epoch read, ARGV[4] = the digest the masters read
-- pin to it ('' for none, 'conflict' when they pin different ones), ARGV[5] = the newest spec's
-- epoch read (0 for none), ARGV[6] = that spec.
-- The merge only restricts: the epoch becomes the higher one; under an equal epoch two
-- different pinned digests become 'conflict' (no acquire or write matches it); a newer spec
-- replaces the stored one.
-- Returns 1, or -1, touching nothing, when the claim is gone.
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then
  return -1
end
local t = redis.call('HMGET', KEYS[1], 'epoch', 'digest', 'spec_epoch')
local epoch, digest = tonumber(t[1] or '0'), t[2]
local given = tonumber(ARGV[3])
if given > epoch then
  epoch, digest = given, ARGV[4]
elseif given == epoch and ARGV[4] ~= '' then
  if digest and digest ~= ARGV[4] then
    digest = 'conflict'
  else
    digest = ARGV[4]
  end
end
if digest and digest ~= '' then
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'digest', digest)
else
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('HDEL', KEYS[1], 'digest')
end
if tonumber(ARGV[5]) > tonumber(t[3] or '0') then
  redis.call('HSET', KEYS[1], 'spec_epoch', ARGV[5], 'spec', ARGV[6])
end
redis.call('HSET', KEYS[1], 'gen', ARGV[2])
redis.call('HDEL', KEYS[1], 'claim')
return 1
