-- Sharded lock: extend every key, only if this owner holds all of them here and no topology
-- change has passed that this hold's placement does not cover.
-- KEYS[1] = topology hash, KEYS[2..] = lock keys
-- ARGV[1] = owner token, ARGV[2] = new ttl in ms, ARGV[3] = the last epoch under which this
-- hold may still be extended (src/sharded/mod.rs, "extensions").
-- Refuses with the error STALETOPOLOGY when the stored epoch is past ARGV[3]. Never
-- re-creates an expired key and never deletes. Returns 1 if extended, 0 otherwise.
local stored = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if stored > tonumber(ARGV[3]) then
  return redis.error_reply('STALETOPOLOGY stored epoch ' .. stored .. ', hold extendable to ' .. ARGV[3])
end
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return 0
  end
end
for i = 2, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
