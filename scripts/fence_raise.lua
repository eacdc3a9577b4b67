-- Fencing write-back: counter = max(counter, token), so that a majority of masters has seen
-- the token before the lock is handed out and any later grant gets a larger one. Only for the
-- generation the client knows this master sealed with: a raise that arrives after the master
-- was flushed (and perhaps sealed again) is refused (fencing.rs).
-- KEYS[1] = fencing hash; ARGV[1] = token, ARGV[2] = the master's generation (field gen).
-- Returns the counter after the call, or -1, touching nothing, when the generation differs.
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[2] then
  return -1
end
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'n', ARGV[1])
  return tonumber(ARGV[1])
end
return n
