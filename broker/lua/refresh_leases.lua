-- Resets the idle time of the given entries, but only of those this consumer still owns: a
-- worker that was presumed dead must not take back work another worker has reclaimed.
--
-- KEYS[1]  {<prefix>:<queue>}:[<level>:]stream
-- ARGV     consumer group, consumer name, entry ids...
--
-- Returns the ids this consumer no longer owns.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
