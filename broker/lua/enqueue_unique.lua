-- Takes a uniqueness key for a task and enqueues it, or returns the id that holds the key.
--
-- KEYS[1]  {<prefix>:<queue>}:unique:<key>       the uniqueness key (holds the owner's task id)
-- KEYS[2]  {<prefix>:<queue>}:[<level>:]stream   the lane's stream
-- KEYS[3]  {<prefix>:<queue>}:[<level>:]delayed  the lane's delayed set
-- ARGV     task id, key TTL (s), payload, due ms ('' when not delayed), data field name
--
-- Guarantees: the check and the enqueue are one step; at most one task holds a key at a time.
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[4] == '' then
  redis.call('XADD', KEYS[2], '*', ARGV[5], ARGV[3])
else
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return ARGV[1]
