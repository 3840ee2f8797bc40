-- Passes a Taskiq message back to its stream for Python workers, once: acks the entry this
-- kiq worker holds and, only if that ack took (no other kiq worker settled it meanwhile), adds
-- the message again as a new entry with its hop count and deletes the old one.
--
-- KEYS[1]  <stream>  Taskiq's stream (named by the Python side)
-- ARGV     group, entry id, data field name, the message's JSON, hops field name, hops
--
-- Returns 1 when it passed the message back, 0 when the entry was no longer pending.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[4], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
