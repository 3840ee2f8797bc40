-- Puts a dead letter's payload back into its lane and deletes the dead letter, atomically, if
-- it still exists (two operators replaying at once enqueue it once).
--
-- KEYS[1]  {<prefix>:<queue>}:[<level>:]dead
-- KEYS[2]  {<prefix>:<queue>}:[<level>:]stream
-- ARGV     dead letter id, data field name, payload
--
-- Returns 1 if it replayed.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return 1
