-- Read-write lock, one master: take a read lease unless a writer holds or waits.
-- KEYS[1] = writer key, KEYS[2] = readers (ZSET token -> expiry, master time in ms),
-- KEYS[3] = waiting writers (ZSET writer id -> deadline), KEYS[4] = fencing counter
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter
-- Writer preference: a writer that waits (and polls before its deadline) shuts out new readers.
-- Returns -1 when refused, else (fencing on) {new counter value, generation}: the vote counts only
-- if that is the generation the client knows for this master (0 when fencing is off).
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed (fencing.rs).
-- piece: fence_gate KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('ZCARD', KEYS[3]) > 0 then
  return -1
end
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
-- piece: fence_take KEYS[4]
