-- Moves due members of a lane's delayed set into its stream, atomically.
--
-- KEYS[1]  {<prefix>:<queue>}:[<level>:]delayed
-- KEYS[2]  {<prefix>:<queue>}:[<level>:]stream
-- ARGV     now (ms), most to move, data field name
--
-- Returns {how many moved, due time of the next one or -1}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], m)
  redis.call('ZREM', KEYS[1], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then return {#due, tonumber(nxt[2])} end
return {#due, -1}
