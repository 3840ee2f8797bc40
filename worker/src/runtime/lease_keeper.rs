//! The lease keeper: keeps the leases of everything this process holds fresh (so no other
//! worker takes it over while it runs), and this worker's heartbeat, until stopped. It
//! outlives the fetcher: leases must stay fresh while in-flight tasks drain.

use std::sync::Arc;

use kiq_broker::envelope::now_ms;
use kiq_broker::{Consumer, WorkerInfo};
use tokio_util::sync::CancellationToken;

use super::inflight::InFlight;
use crate::config::WorkerConfig;

/// Refreshes leases and the heartbeat every lease-refresh interval, until `stop`.
pub(crate) async fn run(
    consumer: Consumer,
    config: WorkerConfig,
    inflight: Arc<InFlight>,
    mut info: WorkerInfo,
    metrics: crate::metrics::Metrics,
    mut gate: tokio::sync::watch::Receiver<kiq_broker::Gate>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.lease_refresh_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The gate's loop stops before the drain, when its sender goes: leases must go on being
    // refreshed then, so its end only stops the listening.
    let mut gate_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Going quiet shows in the heartbeat at once.
            changed = gate.changed(), if gate_open && !info.quiet => {
                gate_open = changed.is_ok();
            }
            _ = stop.cancelled() => return,
        }
        info.quiet = gate.borrow_and_update().quiet;
        info.heartbeat_ms = now_ms();
        info.in_flight = inflight.len() as u64;
        metrics.set_in_flight(inflight.len());
        if let Err(e) = consumer.heartbeat(&info).await {
            tracing::debug!(error = %e, "heartbeat failed; will retry");
        }
        for (lane, ids) in inflight.snapshot() {
            match consumer.refresh_leases(&lane, &ids).await {
                Ok(lost) if !lost.is_empty() => {
                    tracing::warn!(%lane, count = lost.len(), "messages were taken over by another worker while running here; they may run twice");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "lease refresh failed; will retry"),
            }
        }
    }
}
