-- Decides a schedule's tick under the lease: marks the tick fired (once), advances the
-- schedule's state, and puts the message to deliver in the scheduler's outbox. Delivery then
-- goes through the broker's one enqueue path, idempotently (enqueue_once.lua), and removes the
-- outbox entry; a scheduler that takes over delivers whatever its predecessor left there.
--
-- KEYS[1]  {<prefix>}:scheduler:lease
-- KEYS[2]  {<prefix>}:scheduler:fired:<fire id>
-- KEYS[3]  {<prefix>}:schedule:<id>:state
-- KEYS[4]  {<prefix>}:schedule:<id>:fires
-- KEYS[5]  {<prefix>}:scheduler:outbox
-- ARGV     lease value, fired-mark TTL (ms), tick (ms), fire id, now (ms), next tick (ms),
--          the message to deliver (encoded)
--
-- Returns -1 (the lease is not ours: deposed), 0 (the tick was decided before), 1 (decided now).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local fresh = redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[3], 'last_tick_ms') or '0')
if tonumber(ARGV[3]) > last then
  redis.call('HSET', KEYS[3], 'last_tick_ms', ARGV[3], 'next_fire_ms', ARGV[6])
end
if not fresh then return 0 end
redis.call('HSET', KEYS[5], ARGV[4], ARGV[7])
redis.call('HSET', KEYS[3], 'last_fire_ms', ARGV[5])
redis.call('LPUSH', KEYS[4], ARGV[4])
redis.call('LTRIM', KEYS[4], 0, 19)
return 1
