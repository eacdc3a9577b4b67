-- Acquire a Redlock on one master, and (when fencing is on) take the next fencing token.
-- KEYS[1] = lock key, KEYS[2] = fencing hash of the namespace (field n = counter, field gen =
-- the generation of its last seal; fencing.rs),
-- KEYS[3] (optional) = the resource's waiter marker, set when this caller will wait for a
-- release message if refused (notify.rs): the release then PUBLISHes; without it, it does not.
-- The marker's value is 'redquorum:waiting'; a key of that name holding anything else (a peer's
-- lock, another client's key) is left alone, and this waiter falls back to its retry delay.
-- It lives as long as the longer of this caller's ttl and the lock's remaining PTTL.
-- ARGV[1] = owner token, ARGV[2] = ttl in ms, ARGV[3] = "1" to increment the fencing counter
-- Returns -1 when the key is held by anyone (including an older round of ours); when granted,
-- {new counter, generation} with fencing on (the client counts the vote only if the generation
-- is the one it knows for this master), 0 with fencing off. Atomic on this master, so the
-- counter only moves for a grant, and a refusal marks the waiter before any later release can
-- run.
-- Returns -2, touching nothing, when fencing is on and the hash has no generation: the master
-- lost it (restart without data, flush, eviction) or is being sealed, and must be sealed before
-- it votes.
-- piece: fence_gate KEYS[2]
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- piece: fence_take KEYS[2]
end
if KEYS[3] then
  local kind = redis.call('TYPE', KEYS[3]).ok
  if kind == 'none' or (kind == 'string' and redis.call('GET', KEYS[3]) == 'redquorum:waiting') then
    -- The marker must outlive the holder's lock, not the waiter's ttl: a shorter one expires
    -- before the release, which then does not PUBLISH, and the waiter falls back to polling.
    local ttl = math.max(tonumber(ARGV[2]), redis.call('PTTL', KEYS[1]))
    redis.call('SET', KEYS[3], 'redquorum:waiting', 'PX', ttl)
  end
end
return -1
