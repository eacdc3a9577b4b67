-- Multi-resource lock: extend every key, only if this owner still holds all of them here.
-- KEYS = lock keys; ARGV[1] = owner token, ARGV[2] = new ttl in ms.
-- Sharded lock: ARGV[3] = the last topology epoch under which this hold may be extended
-- (src/sharded/mod.rs, "Extensions"), and KEYS[1] is then the group's topology hash: refuses
-- with the error STALETOPOLOGY when the stored epoch is past ARGV[3].
-- Never re-creates an expired key and never deletes. Returns 1 if extended, 0 otherwise.
local first = 1
if ARGV[3] then
  first = 2
  local stored = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
  if stored > tonumber(ARGV[3]) then
    return redis.error_reply('STALETOPOLOGY stored epoch ' .. stored .. ', hold extendable to ' .. ARGV[3])
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
return 1
