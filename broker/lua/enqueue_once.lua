-- Enqueues a message at most once per idempotency key: how a scheduler tick is delivered, so
-- that delivering a decided tick again (a retry, or a successor finishing its predecessor's
-- work) never runs it twice.
--
-- KEYS[1]  {<prefix>:<lane>}:once:<message id>  the idempotency mark
-- KEYS[2]  {<prefix>:<lane>}:stream             the lane's stream
-- KEYS[3]  {<prefix>:<lane>}:delayed            the lane's delayed set
-- KEYS[4]  <prefix>:task:<message id>           the task record
-- ARGV     mark TTL (ms), payload, due ms ('' when not delayed), data field name,
--          pending record ('' to write none), record TTL (s)
--
-- Returns 1 when it enqueued, 0 when the mark said it already had.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6]) end
if ARGV[3] == '' then
  redis.call('XADD', KEYS[2], '*', ARGV[4], ARGV[2])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
end
return 1
