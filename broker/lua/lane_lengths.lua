-- The length of each lane (acknowledged entries are deleted, so a lane of length 0 holds
-- nothing), then whether the cancel flag exists.
--
-- KEYS[1..n-1]  {<prefix>:<lane>}:stream
-- KEYS[n]       <prefix>:cancel:active
local out = {}
for i = 1, #KEYS - 1 do out[i] = redis.call('XLEN', KEYS[i]) end
out[#KEYS] = redis.call('EXISTS', KEYS[#KEYS])
return out
