-- Sharded lock, one master of one group: the multi-resource acquire behind a topology check.
-- KEYS[1] = fencing counter of the group's namespace, KEYS[2] = topology hash,
-- KEYS[3..] = lock keys (sorted, distinct)
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter,
-- ARGV[4] = the topology epoch the client routed this acquire with.
-- Refuses with the error STALETOPOLOGY, touching nothing, when this master stores a newer
-- epoch: a client with an old view must not grant what the new view forbids. Otherwise raises
-- the stored epoch to ARGV[4] (so that older views are refused here from now on), then acts
-- as multi_acquire.lua. Returns -2 when fencing is on and the counter is missing (unsealed),
-- -1 when any key is held, else (fencing on) {new counter value, generation}: the vote counts only
-- if that is the generation the client knows for this master (0 when fencing is off).
local stored = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
local given = tonumber(ARGV[4])
if stored > given then
  return redis.error_reply('STALETOPOLOGY stored epoch ' .. stored .. ', client epoch ' .. given)
end
if stored < given then
  redis.call('HSET', KEYS[2], 'epoch', given)
end
local gen = false
if ARGV[3] == '1' then
  gen = redis.call('HGET', KEYS[1], 'gen')
  if not gen then
    return -2
  end
end
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return -1
  end
end
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
if gen then
  return {redis.call('HINCRBY', KEYS[1], 'n', 1), gen}
end
return 0
