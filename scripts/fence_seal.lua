-- Seal a master's fencing counter: counter = max(counter, seed) (creating it when missing),
-- and record which server process the seal is for, so that any client, also one started
-- later, can tell whether this counter may have been lost since (a new run_id, or no seal).
-- KEYS[1] = fencing counter, KEYS[2] = seal; ARGV[1] = seed, ARGV[2] = the master's run_id.
-- Returns the counter after the call.
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local seed = tonumber(ARGV[1])
if current < seed then
  redis.call('SET', KEYS[1], ARGV[1])
  current = seed
end
redis.call('SET', KEYS[2], ARGV[2])
return current
