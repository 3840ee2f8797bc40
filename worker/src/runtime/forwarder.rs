//! The forwarder: moves due delayed messages (delays, retries, deferrals) into their lanes'
//! streams, sleeping until the next one is due (at most 1 s), or until woken by a producer's
//! announcement or this worker's own retry.

use std::sync::Arc;
use std::time::Duration;

use kiq_broker::envelope::now_ms;
use kiq_broker::Consumer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest sleep between passes.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Most messages moved per lane per pass.
const BATCH: usize = 1000;

/// Promotes until `shutdown`.
pub(crate) async fn run(
    consumer: Consumer,
    lanes: Vec<String>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let now = now_ms();
        let mut next_due: Option<u64> = None;
        for lane in &lanes {
            match consumer.promote_due(lane, now, BATCH).await {
                Ok(p) => {
                    if p.moved > 0 {
                        tracing::debug!(%lane, moved = p.moved, "promoted due messages");
                    }
                    // A full batch means more may be due right now.
                    let next = if p.moved >= BATCH as u64 {
                        Some(now)
                    } else {
                        p.next_due_ms
                    };
                    next_due = match (next_due, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(e) => {
                    tracing::debug!(error = %e, %lane, "promoting delayed messages failed; will retry")
                }
            }
        }
        let sleep = next_due
            .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
