-- Marks a tick handled without firing it (a skipped misfire), under the lease.
--
-- KEYS[1]  {<prefix>}:scheduler:lease
-- KEYS[2]  {<prefix>}:schedule:<id>:state
-- ARGV     lease value, tick (ms), next tick (ms)
--
-- Returns -1 if the lease is not ours, else 1.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_tick_ms') or '0')
if tonumber(ARGV[2]) > last then
  redis.call('HSET', KEYS[2], 'last_tick_ms', ARGV[2], 'next_fire_ms', ARGV[3])
end
return 1
