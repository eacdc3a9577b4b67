-- Fair lock: a ticket for a new waiter, larger than every ticket queued on this master.
-- KEYS[1] = waiter queue (ZSET waiter id -> ticket). Returns the largest ticket + 1 (1 if none).
-- The client takes the maximum over a quorum, so any waiter already queued on a quorum gets
-- a smaller ticket than this one (two quorums share a master): first come, first served.
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] then
  return tonumber(top[2]) + 1
end
return 1
