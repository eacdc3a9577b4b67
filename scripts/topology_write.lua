-- Sharded lock: store a topology (groups, weights, epoch, joint phase) on one master.
-- KEYS[1] = topology hash; ARGV[1] = epoch of the topology, ARGV[2] = its encoded spec.
-- Refuses with STALETOPOLOGY when a newer spec is stored, and with TOPOLOGYCONFLICT when a
-- different spec is stored under the same epoch (two administrators at once). Otherwise
-- stores the spec and raises the checked epoch to ARGV[1]: from then on this master refuses
-- acquires routed with an older view. Returns 1.
local given = tonumber(ARGV[1])
local spec_epoch = tonumber(redis.call('HGET', KEYS[1], 'spec_epoch') or '0')
if spec_epoch > given then
  return redis.error_reply('STALETOPOLOGY stored spec epoch ' .. spec_epoch)
end
if spec_epoch == given and redis.call('HGET', KEYS[1], 'spec') ~= ARGV[2] then
  return redis.error_reply('TOPOLOGYCONFLICT another spec is stored under epoch ' .. given)
end
redis.call('HSET', KEYS[1], 'spec_epoch', given, 'spec', ARGV[2])
local stored = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if stored < given then
  redis.call('HSET', KEYS[1], 'epoch', given)
end
return 1
