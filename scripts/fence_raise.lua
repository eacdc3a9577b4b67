-- Fencing write-back: counter = max(counter, token), so that a majority of masters has seen
-- the token before the lock is handed out and any later grant gets a larger one.
-- KEYS[1] = fencing counter; ARGV[1] = token. Returns the counter after the call.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if current < token then
  redis.call('SET', KEYS[1], ARGV[1])
  return token
end
return current
