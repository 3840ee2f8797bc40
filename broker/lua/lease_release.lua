-- Gives the scheduler lease up if it still holds exactly ARGV[1] (`<holder> <token>`).
--
-- KEYS[1]  {<prefix>}:scheduler:lease
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
