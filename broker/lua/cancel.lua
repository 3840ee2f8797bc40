-- Marks a task cancelled unless its record says it already finished, writes a `cancelled`
-- record and announces it to waiters. Touches the task's slot only: the caller sets its
-- queue's cancel flag before (so workers look for marks) and lists the task among the queue's
-- cancelled tasks and tells workers after.
--
-- KEYS[1]  {<prefix>:t:<id>}          the task record
-- KEYS[2]  {<prefix>:t:<id>}:cancel   the cancel mark workers check before running
-- ARGV     cancelled record, mark TTL (s), record TTL (s), done channel (in the task's slot),
--          the publish command (PUBLISH, or SPUBLISH on a cluster), then the byte strings
--          that mark a final record in the broker's wire format (`WireFormat::final_markers`):
--          one of them starts within a final record's first four bytes
--
-- A record is not decoded here (the wire format is the broker's choice, and Redis's bundled
-- cmsgpack cannot read every record): a final one is recognised by the markers its format names,
-- looked for only at the record's head (an output or argument could hold the same bytes).
-- Returns 1 if cancelled, 0 if it had finished.
local rec = redis.call('GET', KEYS[1])
if rec then
  for i = 6, #ARGV do
    if string.find(string.sub(rec, 1, 3 + #ARGV[i]), ARGV[i], 1, true) then return 0 end
  end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call(ARGV[5], ARGV[4], ARGV[1])
return 1
