-- Enqueues a message at most once per idempotency key: how a scheduler tick and a chain's
-- next step are delivered, so that delivering it again (a retry, a redelivered predecessor,
-- or a successor finishing its predecessor's work) never runs it twice. The caller writes the
-- pending record before (SET NX, in the task's slot).
--
-- KEYS[1]  {<prefix>:<queue>}:once:<message id>  the idempotency mark
-- KEYS[2]  {<prefix>:<queue>}:[<level>:]stream   the lane's stream
-- KEYS[3]  {<prefix>:<queue>}:[<level>:]delayed  the lane's delayed set
-- ARGV     mark TTL (ms), payload, due ms ('' when not delayed), data field name
--
-- Returns 1 when it enqueued, 0 when the mark said it already had.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if ARGV[3] == '' then
  redis.call('XADD', KEYS[2], '*', ARGV[4], ARGV[2])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
end
return 1
