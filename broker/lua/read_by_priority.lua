-- Reads up to ARGV[3] new entries from the lanes KEYS[1..n], in that order: a lane is read
-- only when the ones before it did not fill the count, so higher priorities drain first.
--
-- KEYS[1..n]    {<prefix>:<queue>}:[<level>:]stream, most urgent lane first, n = ARGV[4]
-- KEYS[n+1..]   {<prefix>:<queue>}:cancels, one per queue read (returned alongside, as in a
--               blocking read)
-- ARGV          consumer group, consumer name, count, n
--
-- On a cluster a reader reads one queue, so every key is in that queue's slot.
-- Returns {entries per lane read, whether any cancel flag exists, each lane's length}.
local want = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local out = {}
for i = 1, n do
  if want <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', KEYS[i], '>')
  if r then
    want = want - #r[1][2]
    out[#out + 1] = r[1]
  end
end
local lens = {}
for i = 1, n do lens[i] = redis.call('XLEN', KEYS[i]) end
local flag = 0
for i = n + 1, #KEYS do flag = flag + redis.call('EXISTS', KEYS[i]) end
return {out, flag, lens}
