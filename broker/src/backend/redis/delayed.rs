//! Delayed messages (retries): a sorted set per queue, promoted into the stream when due.

use crate::consumer::delivery::Promotion;
use crate::error::BrokerError;
use crate::keys::DATA_FIELD;

use super::scripts::{self, PROMOTE_DUE};
use super::RedisBackend;

impl RedisBackend {
    /// Promotes up to `limit` delayed messages of `queue` due by `now_ms`.
    pub(crate) async fn promote_due(
        &self,
        queue: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Promotion, BrokerError> {
        let mut inv = PROMOTE_DUE.with_keys(&scripts::promote_due_keys(&self.keys, queue));
        inv.arg(now_ms).arg(limit.max(1)).arg(DATA_FIELD);
        let (moved, next): (u64, i64) = self.pool().invoke(&inv).await?;
        Ok(Promotion {
            moved,
            next_due_ms: (next >= 0).then_some(next as u64),
        })
    }
}
