-- Piece fence_take, $1 = the fencing hash; after fence_gate, once the grant is made: returns
-- {next fencing token, generation} with fencing on (the client counts the vote only if the
-- generation is the one it knows for this master), 0 with fencing off.
if gen then
  return {redis.call('HINCRBY', $1, 'n', 1), gen}
end
return 0
