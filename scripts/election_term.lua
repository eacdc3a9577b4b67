-- Record the term (the round's fencing token) with a won leadership, for readers.
-- KEYS[1] = election key; ARGV[1] = owner token; ARGV[2] = term.
-- Only raises the term, and only while this owner holds the key.
-- Returns 1 if this owner holds the key here (term recorded), 0 otherwise.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  local term = tonumber(redis.call('HGET', KEYS[1], 'term') or '0')
  if tonumber(ARGV[2]) > term then
    redis.call('HSET', KEYS[1], 'term', ARGV[2])
  end
  return 1
end
return 0
