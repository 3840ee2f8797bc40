-- Marks a task cancelled unless its record says it already finished; writes a `cancelled`
-- record (announced to waiters), tells workers, and lists it among its queue's cancelled tasks.
--
-- KEYS[1]  <prefix>:task:<id>                   the task record
-- KEYS[2]  <prefix>:cancel:<id>                 the cancel mark workers check before running
-- KEYS[3]  <prefix>:cancel:active               set while any mark may exist
-- KEYS[4]  {<prefix>:<queue>}:finished:cancelled the queue's index of cancelled tasks
-- ARGV     cancelled record, mark TTL (s), record TTL (s), done channel, cancel channel,
--          task id, index score ('' to leave the index alone), then the byte strings that mark
--          a final record in the broker's wire format (`WireFormat::final_markers`)
--
-- A record is not decoded here (the wire format is the broker's choice, and Redis's bundled
-- cmsgpack cannot read every record): a final one is recognised by the markers its format names.
-- Returns 1 if cancelled, 0 if it had finished.
local rec = redis.call('GET', KEYS[1])
if rec then
  for i = 8, #ARGV do
    if string.find(rec, ARGV[i], 1, true) then return 0 end
  end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6]) end
return 1
