-- Read-write lock: drop a read lease. KEYS[2] = readers; ARGV[1] = owner token.
-- Returns 1 if the lease was live here, 0 otherwise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not expiry then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
if tonumber(expiry) > now then
  return 1
end
return 0
