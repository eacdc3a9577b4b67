-- Reentrant lock, one master: a hash with the owner and one field per hold of that owner.
-- KEYS[1] = lock hash, KEYS[2] = fencing counter of the namespace
-- ARGV[1] = hold token (one per acquisition), ARGV[2] = ttl in ms, ARGV[3] = "1" to increment
-- the fencing counter, ARGV[4] = owner id
-- Grants when the hash is absent or owned by this owner: adds the field "hold:<token>" (so the
-- hold count is HLEN - 1, and a repeated or rolled-back call adds or removes exactly its own
-- hold, never another's), and raises the expiry to at least ttl (never shortens it: the other
-- holds of the owner may have longer leases). Returns -1 when another owner holds the lock,
-- else (fencing on) {new counter value, generation}: the vote counts only
-- if that is the generation the client knows for this master (0 when fencing is off).
-- Returns -2, touching nothing, when fencing is on and the fencing hash has no generation: the
-- master lost it (restart without data, flush, eviction) or is being sealed (fencing.rs).
-- piece: fence_gate KEYS[2]
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[4] then
  return -1
end
redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'hold:' .. ARGV[1], '1')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
-- piece: fence_take KEYS[2]
