-- Campaign in an election on one master: take the leadership key if nobody holds it (and no
-- lock-delay tombstone remains), with the next fencing token as the term.
-- KEYS[1] = election key (a hash), KEYS[2] = fencing counter of the namespace
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" (fencing on: elections require it),
-- ARGV[4] = the candidate's value, ARGV[5] = lock-delay in ms (0 for none)
-- The hash holds owner, value, term (0 here: "not recorded yet"; election_term writes the
-- round's fencing token once the round is won. Not this master's own counter: a master that
-- answered after the round was decided may hold a larger one, and readers take the largest
-- term they see, seed 986) and until (this master's TIME in ms plus ttl: when the holder's
-- lease ends here). The key lives ttl + delay: past `until` it is a tombstone that refuses
-- candidates.
-- Returns -1 when the key exists, -2 (touching nothing) when the fencing hash has no generation
-- (the master must be sealed, fencing.rs), else {new counter value, generation}: the vote
-- counts only if that is the generation the client knows for this master.
-- piece: fence_gate KEYS[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local term = 0
if gen then
  term = redis.call('HINCRBY', KEYS[2], 'n', 1)
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'value', ARGV[4], 'term', 0,
  'until', now_ms + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[5]))
if gen then
  return {term, gen}
end
return term
