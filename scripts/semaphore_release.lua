-- Semaphore: drop every lease of this token here, whatever its slot (also the rollback of a
-- failed round). KEYS[1] = semaphore hash; ARGV[1] = owner token (further ARGV ignored).
-- Returns 1 if a live lease of this token was dropped, 0 otherwise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local released = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local value = fields[i + 1]
  local sep = string.find(value, ':', 1, true)
  if string.sub(value, sep + 1) == ARGV[1] then
    redis.call('HDEL', KEYS[1], fields[i])
    if tonumber(string.sub(value, 1, sep - 1)) > now then
      released = 1
    end
  end
end
return released
