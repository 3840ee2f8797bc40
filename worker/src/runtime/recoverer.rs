//! Taking over the messages of workers that stopped refreshing their leases (they died or were
//! cut off), and dead-lettering those delivered too many times.
//!
//! A pass runs from the fetch loop, not a loop of its own: it fills the same free slots the
//! fetcher reads into, and between reads the fetcher holds them all (a separate loop would
//! find none free while a blocking read waits).

use std::sync::Arc;
use std::time::Duration;

use kiq_broker::{Consumer, Envelope};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::executions::Executions;
use crate::config::WorkerConfig;
use crate::registry::Registry;

/// Reclaims abandoned messages into free slots.
pub(crate) struct Recoverer {
    pub consumer: Consumer,
    pub registry: Arc<Registry>,
    pub config: WorkerConfig,
    pub metrics: crate::metrics::Metrics,
}

impl Recoverer {
    /// One pass over `lanes`, using the slots in `permits`; returns how many messages it took.
    pub async fn pass(
        &self,
        lanes: &[String],
        slots: &Arc<Semaphore>,
        permits: &mut Vec<OwnedSemaphorePermit>,
        executions: &Executions,
    ) -> u64 {
        let mut taken = 0;
        let default_visibility = self.config.visibility_timeout;
        let registry = self.registry.clone();
        let visibility_of = move |env: &Envelope| {
            registry
                .get(&env.task)
                .and_then(|d| d.visibility_timeout)
                .map(|v| v.max(default_visibility))
                .unwrap_or(default_visibility)
        };
        let per_task: Option<&(dyn Fn(&Envelope) -> Duration + Sync)> =
            if self.registry.has_custom_visibility() {
                Some(&visibility_of)
            } else {
                None
            };
        for lane in lanes {
            if permits.is_empty() {
                break;
            }
            let r = match self
                .consumer
                .reclaim(
                    lane,
                    default_visibility,
                    self.config.max_deliveries,
                    permits.len(),
                    per_task,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, %lane, "reclaim failed; will retry");
                    continue;
                }
            };
            let n = (r.deliveries.len() + r.poisoned.len()) as u64;
            if n > 0 {
                self.metrics.redelivered(n);
                tracing::info!(%lane, redelivered = r.deliveries.len(), poisoned = r.poisoned.len(), "took over messages of a stopped worker");
            }
            taken += n;
            for d in r.poisoned {
                executions.spawn_poisoned(d);
            }
            let n = r.deliveries.len().min(permits.len());
            let held: Vec<_> = permits.drain(..n).collect();
            // Reclaim is rare: always check the marks.
            executions.spawn_batch(slots.clone(), held, r.deliveries, true);
        }
        taken
    }
}
