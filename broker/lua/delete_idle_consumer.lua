-- Deletes a consumer from the group only if it holds no pending message (atomic: a message
-- delivered to it between a check and the delete would otherwise be dropped from the PEL).
--
-- KEYS[1]  {<prefix>:<queue>}:[<level>:]stream
-- ARGV     consumer group, consumer name
--
-- Returns 1 if deleted.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
