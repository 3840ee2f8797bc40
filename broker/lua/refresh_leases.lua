-- Resets the idle time of the given entries, but only of those this consumer still owns: a
-- worker that was presumed dead must not take back work another worker has reclaimed.
--
-- KEYS[1]  {<prefix>:<queue>}:[<level>:]stream
-- ARGV     consumer group, consumer name, entry ids...
--
-- Returns the ids another consumer owns now (taken over). An id pending nowhere was acked
-- (most often here, by a completion that landed after the caller listed what it holds): not
-- lost, and nothing to refresh.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(lost, ARGV[i])
    end
  end
end
return lost
