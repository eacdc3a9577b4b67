-- Multi-resource lock: extend every key, only if this owner still holds all of them here.
-- KEYS = lock keys; ARGV[1] = owner token, ARGV[2] = new ttl in ms.
-- Never re-creates an expired key and never deletes. Returns 1 if extended, 0 otherwise.
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return 0
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
