-- Reads up to ARGV[3] new entries from the lanes KEYS[1..n-1], in that order: a lane is read
-- only when the ones before it did not fill the count, so higher priorities drain first.
--
-- KEYS[1..n-1]  {<prefix>:<lane>}:stream, most urgent lane first
-- KEYS[n]       <prefix>:cancel:active  (returned alongside, as in a blocking read)
-- ARGV          consumer group, consumer name, count
--
-- Returns {entries per lane read, whether the cancel flag exists, each lane's length}.
local want = tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS - 1 do
  if want <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', KEYS[i], '>')
  if r then
    want = want - #r[1][2]
    out[#out + 1] = r[1]
  end
end
local lens = {}
for i = 1, #KEYS - 1 do lens[i] = redis.call('XLEN', KEYS[i]) end
return {out, redis.call('EXISTS', KEYS[#KEYS]), lens}
