-- Reentrant lock: extend, only if this hold of this owner is still there.
-- KEYS[1] = lock hash; ARGV[1] = hold token, ARGV[2] = new ttl in ms, ARGV[3] = owner id.
-- Raises the expiry to at least ttl, never shortens it (other holds of the owner may need
-- longer). Never re-creates the hash. Returns 1 if this hold is there, 0 otherwise.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[3] then
  return 0
end
if redis.call('HEXISTS', KEYS[1], 'hold:' .. ARGV[1]) == 0 then
  return 0
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
