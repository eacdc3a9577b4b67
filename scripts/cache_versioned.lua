-- Versioned read and compare-and-set of one cache key, atomic on the key's node.
-- KEYS[1] = data key (the plain value, readable by any client with GET)
-- KEYS[2] = its version key
-- KEYS[3] = the node's version counter (only ever increases, so a version is never reused
--           for a key, not even after the key expired or was deleted: no ABA)
-- ARGV[1] = 'get' or 'cas'
-- get: returns nil when the key is absent, else {version, value}.
-- cas: ARGV[2] = expected version ('' = only if absent), ARGV[3] = value, ARGV[4] = ttl in ms.
--      Returns {1, new_version} when written, {0, current_version} on a conflict with a
--      present key, {0} on a conflict with an absent one.
-- Versions travel as the counter's decimal string (GET after INCR): Lua numbers are doubles.

local function next_version()
  redis.call('INCR', KEYS[3])
  return redis.call('GET', KEYS[3])
end

-- The version of the present value, or false when the key is absent. A key without a version
-- (written by the crate's set, whose SET comes with a DEL of the version key, or by another
-- client while it had none) gets a fresh version here, expiring with it, so a writer holding
-- an older version sees a conflict. Another client's SET over a key that has a version leaves
-- that version in place: it is not seen as a change.
local function current_version()
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return false
  end
  local version = redis.call('GET', KEYS[2])
  if version then
    return version
  end
  version = next_version()
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl > 0 then
    redis.call('SET', KEYS[2], version, 'PX', pttl)
  else
    redis.call('SET', KEYS[2], version)
  end
  return version
end

local current = current_version()

if ARGV[1] == 'get' then
  if not current then
    return false
  end
  return {current, redis.call('GET', KEYS[1])}
end

local matches
if ARGV[2] == '' then
  matches = (current == false)
else
  matches = (current == ARGV[2])
end
if not matches then
  if current then
    return {0, current}
  end
  return {0}
end
local version = next_version()
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[2], version, 'PX', ARGV[4])
return {1, version}
