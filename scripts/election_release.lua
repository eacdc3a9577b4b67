-- Resign (or roll back a campaign round): delete the leadership key if this owner holds it, and
-- announce it so that waiting candidates and observers look again at once.
-- KEYS[1] = election key; ARGV[1] = owner token; ARGV[2] = lock-delay in ms (unused here);
-- ARGV[3], ARGV[4] (optional, both or neither) = channel to PUBLISH on and its payload.
-- Returns 1 if deleted, 0 otherwise.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  -- piece: delete_and_announce KEYS[1]
  return 1
end
return 0
