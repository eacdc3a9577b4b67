-- Fair lock, one attempt on one master: (re)join the queue at this waiter's ticket, then take
-- the lock only if it is free here and this waiter is at the head of the queue here.
-- KEYS[1] = lock key, KEYS[2] = waiter queue (ZSET waiter id -> ticket),
-- KEYS[3] = waiter deadlines (ZSET waiter id -> master time in ms), KEYS[4] = fencing counter
-- ARGV[1] = owner token of this round, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the
-- fencing counter, ARGV[4] = waiter id, ARGV[5] = ticket, ARGV[6] = waiter timeout in ms
-- Waiters whose deadline passed (they stopped polling: crashed, cancelled, partitioned) are
-- dropped first, so a vanished waiter holds up the queue for one waiter timeout at most.
-- Equal tickets are ordered by waiter id, the same on every master.
-- Returns -1 when not granted, else (fencing on) {new counter value, generation}: the vote counts only
-- if that is the generation the client knows for this master (0 when fencing is off).
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed (fencing.rs).
-- piece: fence_gate KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local timeout = tonumber(ARGV[6])
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, waiter in ipairs(gone) do
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[3], now + timeout, ARGV[4])
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < timeout then
    redis.call('PEXPIRE', KEYS[i], timeout)
  end
end
if redis.call('ZRANGE', KEYS[2], 0, 0)[1] ~= ARGV[4] then
  return -1
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -1
end
-- piece: fence_take KEYS[4]
