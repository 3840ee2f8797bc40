-- Takes one token from a token bucket refilled at ARGV[1] tokens per millisecond up to
-- ARGV[2]. Time comes from the Redis server, so workers' clocks do not matter.
--
-- KEYS[1]  {<prefix>:r:<name>}  a hash: tokens, ts
-- ARGV     rate (tokens/ms), burst
--
-- Returns 0 when a token was taken, else how many milliseconds until one will be there.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
