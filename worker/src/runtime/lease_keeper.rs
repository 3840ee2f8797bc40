//! The lease keeper: keeps the leases of everything this process holds fresh (so no other
//! worker takes it over while it runs), and this worker's heartbeat, until stopped. It
//! outlives the fetcher: leases must stay fresh while in-flight tasks drain.
//!
//! It runs on a thread of its own, with a Tokio runtime and a Redis connection of its own: a
//! task that holds its runtime thread without awaiting (a CPU-bound loop, a blocking call)
//! stalls every other task of that thread, and a stalled refresh would let a lease lapse and
//! its message run a second time elsewhere. With the keeper apart, a worker process can run
//! on one runtime thread (the cheapest per task) and still keep its leases however its tasks
//! behave.

use std::sync::Arc;

use kiq_broker::envelope::now_ms;
use kiq_broker::{Broker, Consumer, WorkerInfo};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::inflight::InFlight;
use crate::config::WorkerConfig;

/// A running lease keeper. It lives as long as the worker's runtime unless stopped, as the
/// task it was: a worker whose `run` future is dropped leaves its executions running on the
/// runtime, and their leases must stay fresh; once the runtime shuts down, its thread stops.
pub(crate) struct LeaseKeeper {
    stop: CancellationToken,
    done: Done,
}

enum Done {
    /// On its own thread: it says when it has ended.
    Thread(oneshot::Receiver<()>),
    /// On the worker's runtime (an in-memory broker, or no thread or runtime could be made).
    Task(tokio::task::JoinHandle<()>),
}

impl LeaseKeeper {
    /// Starts the keeper of `consumer`'s leases and heartbeat: on a thread of its own with
    /// its own connection to the same Redis, or, for an in-memory broker (or when no thread
    /// or runtime can be made), as a task on the current runtime.
    pub(crate) async fn start(
        consumer: &Consumer,
        config: WorkerConfig,
        inflight: Arc<InFlight>,
        info: WorkerInfo,
        metrics: crate::metrics::Metrics,
        gate: tokio::sync::watch::Receiver<kiq_broker::Gate>,
    ) -> Self {
        let stop = CancellationToken::new();
        let keeper = |consumer| {
            run(
                consumer,
                config.clone(),
                inflight.clone(),
                info.clone(),
                metrics.clone(),
                gate.clone(),
                stop.clone(),
            )
        };
        let done = match own_thread(consumer, keeper).await {
            Ok(ended) => {
                // The runtime's shutdown drops this task, and with it the guard that stops the
                // thread.
                let on_shutdown: DropGuard = stop.clone().drop_guard();
                let stopped = stop.clone();
                tokio::spawn(async move {
                    let _guard = on_shutdown;
                    stopped.cancelled().await;
                });
                Done::Thread(ended)
            }
            Err(why) => {
                if let Some(e) = why {
                    tracing::warn!(error = %e, "cannot give the lease keeper a thread of its own: it runs on the worker's runtime, where a task that blocks its thread delays it");
                }
                Done::Task(tokio::spawn(keeper(consumer.clone())))
            }
        };
        Self { stop, done }
    }

    /// Stops the keeper and waits until it has.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let ended = match self.done {
            Done::Thread(ended) => ended.await.is_ok(),
            Done::Task(task) => task.await.is_ok(),
        };
        if !ended {
            tracing::error!("the lease keeper ended abnormally (it panicked)");
        }
    }
}

/// Runs `keeper` (given a consumer of its own, of the same Redis and name) on a new thread
/// with a runtime of its own; returns what says it has ended. `Err(None)`: an in-memory
/// broker, which has no connections to make and stays on the worker's runtime.
async fn own_thread<F>(
    consumer: &Consumer,
    keeper: impl FnOnce(Consumer) -> F,
) -> Result<oneshot::Receiver<()>, Option<String>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if consumer.broker().is_in_memory() {
        return Err(None);
    }
    // One connection: the keeper sends a few commands every lease-refresh interval. It is
    // made on first use, so on the keeper's runtime, which then drives it.
    let config = consumer.broker().config().clone().pool_size(1);
    let broker = Broker::lazy(config).map_err(|e| Some(e.to_string()))?;
    let future = keeper(broker.consumer(consumer.name()));
    // The runtime is made on the thread (a runtime may not be dropped in async code, as it
    // would be here if the thread could not start); the thread says whether it could.
    let (started, ready) = oneshot::channel::<Result<(), String>>();
    let (done, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name("kiq-leases".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = started.send(Ok(()));
                    runtime.block_on(future);
                    drop(runtime);
                    let _ = done.send(());
                }
                Err(e) => {
                    let _ = started.send(Err(e.to_string()));
                }
            }
        })
        .map_err(|e| Some(e.to_string()))?;
    match ready.await {
        Ok(Ok(())) => Ok(ended),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(Some("the lease keeper's thread ended at once".into())),
    }
}

/// Refreshes leases and the heartbeat every lease-refresh interval, until `stop`.
async fn run(
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
