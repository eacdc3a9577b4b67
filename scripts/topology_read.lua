-- Sharded lock: the topology spec stored on this master.
-- KEYS[1] = topology hash. Returns {spec_epoch, spec}, each nil when not stored.
return {redis.call('HGET', KEYS[1], 'spec_epoch'), redis.call('HGET', KEYS[1], 'spec')}
