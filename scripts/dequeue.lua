-- Leave a wait: remove member ARGV[1] from every sorted set in KEYS (a fair-lock waiter that
-- gives up, a writer that stops waiting). Returns 1.
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 1
