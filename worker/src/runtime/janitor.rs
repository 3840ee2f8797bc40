//! The janitor: trims the finished-task indexes of this worker's queues to the result TTL
//! (as often as results expire, at most once a minute; any worker may do it), and removes
//! consumers that died long ago and hold nothing, so groups do not grow with every restart;
//! and, once a minute, rolls up the history's last settled ten-minute windows (any worker may:
//! the same sums), so that charts by ten minutes read one hash per point.

use std::time::Duration;

use kiq_broker::Consumer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often long-gone consumers are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Tidies until `shutdown`.
pub(crate) async fn run(
    consumer: Consumer,
    queues: Vec<String>,
    lanes: Vec<String>,
    consumer_retention: Duration,
    shutdown: CancellationToken,
) {
    let trim_every = consumer
        .broker()
        .config()
        .result_ttl
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut next_trim = Instant::now() + trim_every;
    let mut next_prune = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_prune {
            next_prune = now + PRUNE_EVERY;
            if let Err(e) = consumer.roll_up_history().await {
                tracing::debug!(error = %e, "rolling up the history failed; will retry");
            }
            for lane in &lanes {
                match consumer.prune_consumers(lane, consumer_retention).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(%lane, removed = n, "removed long-gone consumers")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "pruning consumers failed"),
                }
            }
        }
        if now >= next_trim {
            next_trim = now + trim_every;
            for queue in &queues {
                if let Err(e) = consumer.trim_indexes(queue).await {
                    tracing::debug!(error = %e, %queue, "trimming task indexes failed; will retry");
                }
            }
        }
        let wake = next_trim.min(next_prune);
        let pause = wake.saturating_duration_since(Instant::now());
        if shutdown
            .run_until_cancelled(tokio::time::sleep(pause))
            .await
            .is_none()
        {
            return;
        }
    }
}
