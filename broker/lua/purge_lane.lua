-- Takes up to a count of a lane's waiting messages (those no worker has read yet) and of its
-- delayed messages out of the lane, and returns them: one step of a queue's purge.
--
-- KEYS[1]  {<prefix>:<queue>}:[<level>:]stream    the lane's stream
-- KEYS[2]  {<prefix>:<queue>}:[<level>:]delayed   the lane's delayed set
-- ARGV     the consumer group, the most entries to take of each, the entry field holding the
--          message
--
-- Messages a worker has read (pending in the group, after the group's last-delivered id) are
-- left alone: they finish, or are reclaimed, as usual. Without the group (no worker ever read
-- the lane) every entry is waiting. Returns {waiting messages, delayed messages}.
local n = tonumber(ARGV[2])
local waiting = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local start = '-'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == ARGV[1] and last then start = '(' .. last end
  end
  local ids = {}
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', n)) do
    ids[#ids + 1] = e[1]
    local data = ''
    local fields = e[2]
    for i = 1, #fields, 2 do
      if fields[i] == ARGV[3] then data = fields[i + 1] end
    end
    waiting[#waiting + 1] = data
  end
  if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
end
local delayed = redis.call('ZRANGE', KEYS[2], 0, n - 1)
if #delayed > 0 then redis.call('ZREM', KEYS[2], unpack(delayed)) end
return {waiting, delayed}
