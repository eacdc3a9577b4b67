-- Semaphore: the slots held by a live lease on this master (read only).
-- KEYS[1] = semaphore hash. Returns an array of slot numbers.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local value = fields[i + 1]
  local sep = string.find(value, ':', 1, true)
  if tonumber(string.sub(value, 1, sep - 1)) > now then
    held[#held + 1] = tonumber(fields[i])
  end
end
return held
