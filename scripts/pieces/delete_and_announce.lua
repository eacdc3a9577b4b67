-- Piece delete_and_announce, $1 = the key to delete, once the caller found its owner there:
-- deletes it and, when ARGV[3] and ARGV[4] are given (both or neither), PUBLISHes ARGV[4] on
-- channel ARGV[3], so that waiters look again at once.
redis.call('DEL', $1)
if ARGV[3] and ARGV[4] then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
