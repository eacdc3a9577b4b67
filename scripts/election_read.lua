-- Read the leader of an election on one master (read only).
-- KEYS[1] = election key.
-- Returns {owner, value, term, ms left of the lease} while a holder's lease lasts here
-- (by this master's TIME), or an empty array when nobody holds it (absent, or only a
-- lock-delay tombstone remains).
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  return {}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'until'))
if lease_until <= now_ms then
  return {}
end
return {owner, redis.call('HGET', KEYS[1], 'value'),
  tonumber(redis.call('HGET', KEYS[1], 'term')), lease_until - now_ms}
