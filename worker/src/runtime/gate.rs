//! The gate: what the fetch loops must not read now. A paused queue's lanes (every partition's)
//! are left alone; once the worker goes quiet (a signal, or an operator through Redis), nothing
//! new is read, and what it holds finishes. The gate is read from Redis every second and at
//! once when the subscriber hears of a change; a worker that cannot reach Redis keeps the last
//! gate it read.

use std::sync::Arc;
use std::time::Duration;

use kiq_broker::{Consumer, Gate};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// How often the gate is read when no change is announced.
pub(crate) const CHECK: Duration = Duration::from_secs(1);

/// The gate as it stands now, and whether `quiet` already fired: read before anything is
/// fetched (a queue paused before this worker started is never read), retried while Redis
/// does not answer. Stopped by `shutdown`, it says quiet.
pub(crate) async fn initial(
    consumer: &Consumer,
    quiet: &CancellationToken,
    shutdown: &CancellationToken,
) -> Gate {
    let mut backoff = Duration::from_millis(100);
    loop {
        match consumer.gate().await {
            Ok(mut g) => {
                g.quiet |= quiet.is_cancelled();
                return g;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read paused queues yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => {
                        let mut g = Gate::default();
                        g.quiet = true;
                        return g;
                    }
                }
                backoff = (backoff * 2).min(CHECK);
            }
        }
    }
}

/// Keeps `gate` current until `stop`: reads it every [`CHECK`], when `poke` is notified (the
/// subscriber heard of a change) and when `quiet` (the local signal) fires.
pub(crate) async fn run(
    consumer: Consumer,
    poke: Arc<Notify>,
    quiet: CancellationToken,
    gate: watch::Sender<Gate>,
    stop: CancellationToken,
) {
    loop {
        let quiet_now = quiet.is_cancelled();
        tokio::select! {
            _ = tokio::time::sleep(CHECK) => {}
            _ = poke.notified() => {}
            _ = quiet.cancelled(), if !quiet_now => {}
            _ = stop.cancelled() => return,
        }
        let mut next = match consumer.gate().await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read paused queues; keeping the last known");
                gate.borrow().clone()
            }
        };
        // Quiet is for good: a member removed from Redis does not wake a quiet worker.
        next.quiet |= quiet.is_cancelled() || gate.borrow().quiet;
        gate.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            for q in next.paused.iter().filter(|q| !current.paused.contains(q)) {
                tracing::info!(queue = %q, "queue paused: not reading it");
            }
            for q in current.paused.iter().filter(|q| !next.paused.contains(q)) {
                tracing::info!(queue = %q, "queue resumed: reading it again");
            }
            if next.quiet && !current.quiet {
                tracing::info!("going quiet: taking no new work, finishing what is held");
            }
            *current = next.clone();
            true
        });
    }
}
