-- Takes or renews the scheduler lease. The lease holds `<holder> <token>`; taking it when
-- free draws a new token from the fence counter, so every reign has a larger token.
--
-- KEYS[1]  {<prefix>}:scheduler:lease
-- KEYS[2]  {<prefix>}:scheduler:fence
-- ARGV     holder id, TTL (ms)
--
-- Returns the holder's token, or -1 if another holder has the lease.
local v = redis.call('GET', KEYS[1])
if v then
  local holder, token = string.match(v, '^(%S+) (%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return -1
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
