-- Sharded lock: the topology state stored on this master.
-- KEYS[1] = topology hash. Returns {spec_epoch, spec, epoch, digest, gen}, each nil when not
-- stored (epoch: the newest this master has seen, from a write or an acquire; digest: the spec
-- pinned to it; gen: the generation of its last seal, src/sharded/seal.rs).
local t = {}
for i, field in ipairs({'spec_epoch', 'spec', 'epoch', 'digest', 'gen'}) do
  t[i] = redis.call('HGET', KEYS[1], field)
end
return t
