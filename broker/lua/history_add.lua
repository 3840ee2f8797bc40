-- Adds a completion batch's counters to the throughput history: the current minute's bucket
-- and the current hour's, each a hash of counters that expires after its retention, and the
-- current ten-minute window's rollup if a reader already made it (a late batch, from a worker
-- whose clock is behind, still counts there).
--
-- KEYS[1]  {<prefix>}:history:m:<minute start, s>   the minute's counters
-- KEYS[2]  {<prefix>}:history:h:<hour start, s>     the hour's counters
-- KEYS[3]  {<prefix>}:history:t:<window start, s>   the minute's ten-minute rollup, if made
-- ARGV     the minute bucket's TTL (s), the hour bucket's TTL (s), then field, increment pairs
--
-- One call per completion batch: counters of every task of the batch, summed by the caller.
local rolled = redis.call('EXISTS', KEYS[3]) == 1
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  if rolled then redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
