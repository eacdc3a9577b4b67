-- Extend a leadership if this owner still holds it here.
-- KEYS[1] = election key; ARGV[1] = owner token; ARGV[2] = new ttl in ms; ARGV[3] = lock-delay
-- in ms. Moves `until` (this master's TIME) and the key's expiry (ttl + delay) forward.
-- Never re-creates the key and never deletes. Returns 1 if extended, 0 otherwise.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('HSET', KEYS[1], 'until', now_ms + tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
  return 1
end
return 0
