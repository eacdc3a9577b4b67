-- Semaphore: extend this token's lease on its slot, if still live here (never re-creates it).
-- KEYS[1] = semaphore hash; ARGV[1] = owner token, ARGV[2] = new ttl in ms, ARGV[3] = slot.
-- Only the slot won on the quorum counts: a lease of this token on another slot (a straggler
-- of its acquire round) is not a vote. Returns 1 if extended, 0 otherwise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local value = redis.call('HGET', KEYS[1], ARGV[3])
if not value then
  return 0
end
local sep = string.find(value, ':', 1, true)
if string.sub(value, sep + 1) ~= ARGV[1] or tonumber(string.sub(value, 1, sep - 1)) <= now then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[3], string.format('%.0f', now + ttl) .. ':' .. ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
