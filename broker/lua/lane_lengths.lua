-- The length of each lane (acknowledged entries are deleted, so a lane of length 0 holds
-- nothing), then whether any of the queues' cancel flags exists.
--
-- KEYS[1..n]    {<prefix>:<queue>}:[<level>:]stream, n = ARGV[1]
-- KEYS[n+1..]   {<prefix>:<queue>}:cancels, one per queue read
-- ARGV          n
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do out[i] = redis.call('XLEN', KEYS[i]) end
local flag = 0
for i = n + 1, #KEYS do flag = flag + redis.call('EXISTS', KEYS[i]) end
out[n + 1] = flag
return out
