-- Counts group member ARGV[1] done, once (redeliveries do not count twice). When the last
-- member is done, sends the stored callback to its lane's stream: the count and the send are
-- one step, so the callback is sent exactly once however often the last member is delivered.
--
-- KEYS[1]  {<prefix>:<callback queue>}:group:<group id>  the group: size, members done, the
--          callback ({<prefix>:g:<group id>} for a group without one)
-- KEYS[2]  {<prefix>:<callback queue>}:[<level>:]stream  the callback's lane (absent without one)
-- ARGV     member index, data field name
--
-- Returns 0 (already counted), 1 (counted), 2 (counted, and it was the last), 3 (the group is
-- gone: it expired, so there is nothing left to count or send, and nothing is written).
if redis.call('EXISTS', KEYS[1]) == 0 then return 3 end
if redis.call('HSETNX', KEYS[1], 'm' .. ARGV[1], 1) == 0 then return 0 end
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
if size and done >= size then
  local cb = redis.call('HGET', KEYS[1], 'callback')
  if cb and KEYS[2] then
    redis.call('XADD', KEYS[2], '*', ARGV[2], cb)
  end
  return 2
end
return 1
