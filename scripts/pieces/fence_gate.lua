-- Piece fence_gate, $1 = the fencing hash (field gen = the generation of its last seal;
-- fencing.rs). With fencing on (ARGV[3] == '1'), reads the generation into the local gen, or
-- returns -2, touching nothing, when there is none: the master lost it (restart without data,
-- flush, eviction) or is being sealed, and must be sealed before it votes. With fencing off,
-- gen is false.
local gen = false
if ARGV[3] == '1' then
  gen = redis.call('HGET', $1, 'gen')
  if not gen then
    return -2
  end
end
