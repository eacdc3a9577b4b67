-- Read-write lock, one master: register (or refresh) this writer's intent, then take the write
-- lock if no writer holds it and no live reader remains.
-- KEYS[1] = writer key, KEYS[2] = readers, KEYS[3] = waiting writers, KEYS[4] = fencing counter
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter,
-- ARGV[4] = writer id, ARGV[5] = writer wait timeout in ms (how long the intent outlives the
-- writer's last attempt)
-- Returns -1 when refused, else (fencing on) {new counter value, generation}: the vote counts only
-- if that is the generation the client knows for this master (0 when fencing is off).
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed (fencing.rs).
-- piece: fence_gate KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local timeout = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + timeout, ARGV[4])
if redis.call('PTTL', KEYS[3]) < timeout then
  redis.call('PEXPIRE', KEYS[3], timeout)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then
  return -1
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -1
end
-- piece: fence_take KEYS[4]
