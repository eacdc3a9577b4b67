-- Sharded lock: the change lock of one master (src/sharded/change.rs), taken on a quorum of
-- every group a change involves before it reads or writes any topology, so that two
-- administrators never change the topology at once.
-- KEYS[1] = change lock key; ARGV[1] = the administrator's token, ARGV[2] = ttl in ms.
-- Sets the key to the token for the ttl if it is free or already this token's (then the ttl is
-- renewed). Returns 1 if this token holds it now, 0 when another one does. A ttl of 0 releases:
-- deletes the key if this token holds it, and returns 1.
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 1
end
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
