-- Multi-resource lock, one master: all the keys or none of them. Also each group's round of a
-- sharded lock, behind a topology epoch check (src/sharded/mod.rs).
-- KEYS[1] = fencing hash of the namespace (field n = counter, field gen = the generation of its
-- last seal; fencing.rs), then (sharded only) the group's topology hash, then the lock keys
-- (sorted, distinct)
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter,
-- ARGV[4], ARGV[5] (sharded only) = the topology epoch the client routed this acquire with, and
-- the digest of that epoch's spec.
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed, and must be sealed
-- before it votes.
-- Sharded: refuses with the error TOPOLOGYUNSEALED, touching nothing, when the topology hash has
-- no seal generation (gen): the master lost its topology state (restart without data, flush) or
-- is being sealed, and must be sealed from a quorum first (src/sharded/seal.rs). Refuses with
-- STALETOPOLOGY, touching nothing, when this master stores a
-- newer epoch (a client with an old view must not grant what the new view forbids), and with
-- TOPOLOGYCONFLICT when this master pins another spec's digest to the same epoch (an epoch
-- pins exactly one spec). Otherwise raises the stored epoch to ARGV[4] and pins ARGV[5] to it,
-- so that older views and other specs of this epoch are refused here from now on.
-- Returns -1 when any of the keys is held (by anyone, an older round of ours included), else,
-- when granted, {new counter, generation} with fencing on (the client counts the vote only if
-- the generation is the one it knows for this master), 0 with fencing off; sharded,
-- {new counter or 0, generation or nil, topology generation} (the client counts the vote only
-- if the topology generation names the server process it knows there). Checks every key
-- before setting any, so a master never holds part of the set.
-- piece: fence_gate KEYS[1]
local first = 2
local sealed = false
if ARGV[4] then
  first = 3
  -- piece: topology_check KEYS[2]
  local given = tonumber(ARGV[4])
  if stored > given then
    return redis.error_reply('STALETOPOLOGY stored epoch ' .. stored .. ', client epoch ' .. given)
  end
  if stored == given and t[2] and t[2] ~= ARGV[5] then
    return redis.error_reply('TOPOLOGYCONFLICT epoch ' .. given .. ' pins another spec here')
  end
  if stored < given or not t[2] then
    redis.call('HSET', KEYS[2], 'epoch', given, 'digest', ARGV[5])
  end
end
for i = first, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return -1
  end
end
for i = first, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
local counter = 0
if gen then
  counter = redis.call('HINCRBY', KEYS[1], 'n', 1)
end
if sealed then
  return {counter, gen, sealed}
end
if gen then
  return {counter, gen}
end
return 0
