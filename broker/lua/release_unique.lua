-- Releases a uniqueness key if the finishing task still holds it.
--
-- KEYS[1]  {<prefix>:<queue>}:unique:<key>
-- ARGV     the holder's task id
--
-- Guarantees: a key taken over by a later task (after the TTL) is never released by an earlier one.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
