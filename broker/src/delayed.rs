//! Delayed messages (retries): a sorted set per queue, promoted into the stream when due.

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::keys::DATA_FIELD;

/// Moves due members of the delayed set into the stream, atomically (one queue's keys share a
/// hash slot). Returns how many moved and the due time of the next one, if any.
const PROMOTE_SCRIPT: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], m)
  redis.call('ZREM', KEYS[1], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then return {#due, tonumber(nxt[2])} end
return {#due, -1}
"#;

/// What one promotion pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    /// Messages moved into the stream.
    pub moved: u64,
    /// When the next delayed message is due (ms since the epoch), if there is one.
    pub next_due_ms: Option<u64>,
}

impl Broker {
    /// Promotes up to `limit` delayed messages of `queue` due by `now_ms`.
    pub async fn promote_due(
        &self,
        queue: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Promotion, BrokerError> {
        let script = redis::Script::new(PROMOTE_SCRIPT);
        let mut inv = script.key(self.keys().delayed(queue));
        inv.key(self.keys().stream(queue))
            .arg(now_ms)
            .arg(limit.max(1))
            .arg(DATA_FIELD);
        let (moved, next): (u64, i64) = self.pool().invoke(&inv).await?;
        Ok(Promotion {
            moved,
            next_due_ms: (next >= 0).then_some(next as u64),
        })
    }
}
