-- Sends a Taskiq message at most once per idempotency key: how the scheduler delivers a tick
-- of a Taskiq schedule, so that delivering it again (a parked tick redelivered by the next
-- active scheduler) never sends it twice. The mark shares the stream's hash slot (its tag is
-- the stream's own), so the two steps are one even on a cluster.
--
-- KEYS[1]  {<stream's tag>}:<prefix>:once:<fire id>  the idempotency mark
-- KEYS[2]  <stream>                                   Taskiq's stream (named by the Python side)
-- ARGV     mark TTL (ms), data field name, the message's JSON
--
-- Returns 1 when it sent, 0 when the mark said it already had.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return 1
