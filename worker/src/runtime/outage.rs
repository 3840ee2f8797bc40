//! `outage`: how a worker loop rides out Redis being unreachable (the fetcher's reads, a
//! Taskiq bridge's).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A loop's view of a Redis outage: warned about once, waited out with backoff (100 ms,
/// doubling to 5 s).
pub(super) struct Outage {
    down: bool,
    backoff: Duration,
}

impl Default for Outage {
    fn default() -> Self {
        Self {
            down: false,
            backoff: Duration::from_millis(100),
        }
    }
}

impl Outage {
    /// Notes `error` (logged once per outage as `what`) and waits the backoff; false if
    /// `shutdown` fired meanwhile.
    pub(super) async fn wait(
        &mut self,
        error: &kiq_broker::BrokerError,
        what: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        if !self.down {
            // Out of memory is no outage: Redis answers, and refuses writes until memory is
            // freed or maxmemory raised (reads go on), so say that instead.
            if error.is_out_of_memory() {
                tracing::error!(%error, "Redis is out of memory (maxmemory reached) and refuses writes; retrying");
            } else {
                tracing::warn!(%error, "{what}");
            }
            self.down = true;
        }
        let slept = shutdown
            .run_until_cancelled(tokio::time::sleep(self.backoff))
            .await
            .is_some();
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
        slept
    }

    /// Redis answered again.
    pub(super) fn over(&mut self) {
        if self.down {
            tracing::info!("worker reconnected to Redis");
        }
        *self = Self::default();
    }
}
