-- Sharded lock: store a topology (groups, weights, epoch, joint phase) on one master.
-- KEYS[1] = topology hash; ARGV[1] = epoch of the topology, ARGV[2] = its encoded spec,
-- ARGV[3] = the spec's digest; for a change (not a first topology), KEYS[2] = the change lock
-- key and ARGV[4] = the changing administrator's token: refused with TOPOLOGYBUSY, touching
-- nothing, unless this master's change lock holds that token (topology_change_lock.lua), so a
-- write of an administrator whose lock expired or was taken over never lands.
-- Refuses with TOPOLOGYUNSEALED, touching nothing, when the hash has no seal generation (gen):
-- the master lost its topology state (restart without data, flush) or is being sealed, and
-- must be sealed from a quorum first (src/sharded/seal.rs).
-- An epoch pins exactly one spec: refuses with TOPOLOGYCONFLICT when this master pins another
-- digest to the same epoch (stored by a write or by an acquire routed with it), or stores
-- another spec under it; with STALETOPOLOGY when it has seen a newer epoch. Otherwise stores
-- the spec, raises the checked epoch to ARGV[1] and pins ARGV[3] to it: from then on this
-- master refuses acquires routed with an older view or another spec. Returns the seal
-- generation (the client counts the write only if it names the process it knows there).
local given = tonumber(ARGV[1])
local t = {}
for i, field in ipairs({'epoch', 'digest', 'spec_epoch', 'spec', 'gen'}) do
  t[i] = redis.call('HGET', KEYS[1], field)
end
if ARGV[4] and redis.call('GET', KEYS[2]) ~= ARGV[4] then
  return redis.error_reply('TOPOLOGYBUSY the change lock is not held by this change here')
end
if not t[5] then
  return redis.error_reply('TOPOLOGYUNSEALED topology state not sealed on this master')
end
local stored = tonumber(t[1] or '0')
local spec_epoch = tonumber(t[3] or '0')
if stored > given or spec_epoch > given then
  return redis.error_reply('STALETOPOLOGY stored epoch ' .. math.max(stored, spec_epoch))
end
if (stored == given and t[2] and t[2] ~= ARGV[3]) or (spec_epoch == given and t[4] ~= ARGV[2]) then
  return redis.error_reply('TOPOLOGYCONFLICT another spec is pinned to epoch ' .. given)
end
redis.call('HSET', KEYS[1], 'spec_epoch', given, 'spec', ARGV[2], 'epoch', given, 'digest', ARGV[3])
return t[5]
