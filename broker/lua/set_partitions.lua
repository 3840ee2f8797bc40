-- Sets a queue's partitions: how many producers spread it over, and the physical queues
-- workers read (every partition it ever had, so that lowering the count strands nothing).
-- The caller chose the new partitions' names; it sends the list it grew them from, and
-- nothing changes (0 is returned) if another caller changed the list meanwhile.
--
-- KEYS[1]  {<prefix>}:partitions        queue -> count producers use (no field: 1)
-- KEYS[2]  {<prefix>}:partitions:read   queue -> comma-separated physical queues, partition 0 first
-- ARGV[1]  the queue
-- ARGV[2]  the new count (>= 1)
-- ARGV[3]  the list as read before ('' for none)
-- ARGV[4]  the new list ('' for a queue of one partition)
local current = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if current ~= ARGV[3] then
  return 0
end
if tonumber(ARGV[2]) <= 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
return 1
