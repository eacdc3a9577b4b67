-- Semaphore, one master: take the lowest free permit slot for this token.
-- KEYS[1] = semaphore (HASH slot -> "<expiry, master time in ms>:<token>"),
-- KEYS[2] = fencing counter of the namespace
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter,
-- ARGV[4] = permits
-- Each slot is a mutex; the client needs the *same* slot on a quorum, which is what keeps the
-- holders to `permits` (a plain count per master would not: with 5 masters and 2 permits,
-- three holders could each be counted on 3 masters). Masters that agree on which slots are
-- held pick the same lowest free slot. A token that already holds a slot here (a repeated
-- call) gets that slot back. Leases past their expiry are dropped first.
-- Returns -1 when every slot is held, else {0, slot} with fencing off and {new counter value,
-- slot, generation} with fencing on (the vote counts only if that is the generation the
-- client knows for this master).
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed (fencing.rs).
-- piece: fence_gate KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local taken, slot = {}, nil
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local value = fields[i + 1]
  local sep = string.find(value, ':', 1, true)
  local expiry = tonumber(string.sub(value, 1, sep - 1))
  if expiry <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif string.sub(value, sep + 1) == ARGV[1] then
    slot = tonumber(fields[i])
  else
    taken[tonumber(fields[i])] = true
  end
end
if not slot then
  slot = 0
  while taken[slot] do
    slot = slot + 1
  end
  if slot >= tonumber(ARGV[4]) then
    return -1
  end
  local ttl = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], slot, string.format('%.0f', now + ttl) .. ':' .. ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
if gen then
  return {redis.call('HINCRBY', KEYS[2], 'n', 1), slot, gen}
end
return {0, slot}
