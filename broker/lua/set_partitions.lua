-- Sets how many partitions producers spread a queue over, and raises (never lowers) how many
-- workers read, so that lowering the count strands no message. Returns {previous, read}.
--
-- KEYS[1]  {<prefix>}:partitions        queue -> count producers use (no field: 1)
-- KEYS[2]  {<prefix>}:partitions:read   queue -> count workers read (the most it ever had)
-- ARGV[1]  the queue
-- ARGV[2]  the new count (>= 1)
local n = tonumber(ARGV[2])
local previous = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '1')
if n <= 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], n)
end
local read = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '1')
if n > read then
  read = n
  redis.call('HSET', KEYS[2], ARGV[1], read)
end
return {previous, read}
