//! The worker of one process: validates its configuration, then wires its loops (see the
//! module list in [`super`]) and drains them on shutdown.
//!
//! Flow control: a message holds a *slot* from the moment it is read (or reclaimed) until its
//! completion is queued, so at most `concurrency + prefetch` messages are held by this process;
//! each read asks for as many messages as there are free slots (one XREADGROUP per batch).

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use kiq_broker::{Broker, BrokerError, Write};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::completer::{self, Listeners};
use super::executions::Executions;
use super::fetcher::Fetcher;
use super::inflight::InFlight;
use super::lease_keeper::LeaseKeeper;
use super::recoverer::Recoverer;
use super::{forwarder, gate, janitor, subscriber, taskiq_bridge};
use crate::config::WorkerConfig;
use crate::execute::Executor;
use crate::metrics::Metrics;
use crate::middleware::Middleware;
use crate::registry::Registry;
use crate::state::Provided;

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// Redis failed in a way the worker cannot ride out at start-up.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What a worker did, reported when it stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Messages read.
    pub received: u64,
    /// Messages taken over from dead workers.
    pub reclaimed: u64,
    /// Tasks still running when the shutdown timeout ran out (left pending for redelivery).
    pub abandoned: usize,
    /// Completions that could not be written before stopping (left pending for redelivery).
    pub unwritten: usize,
}

/// One worker process's consumer.
pub struct Worker {
    broker: Broker,
    registry: Arc<Registry>,
    config: WorkerConfig,
    layers: Vec<Arc<dyn Middleware>>,
    provided: Provided,
    metrics: Metrics,
    quiet: CancellationToken,
}

/// Builds a [`Worker`]: its configuration, middleware and the values it provides to tasks.
pub struct WorkerBuilder {
    worker: Worker,
}

impl WorkerBuilder {
    /// Uses `config`.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.worker.config = config;
        self
    }

    /// Wraps every task in `layer` (inside the layers installed process-wide, which are read
    /// when the worker starts, and after those added before it).
    pub fn layer(mut self, layer: impl Middleware) -> Self {
        self.worker.layers.push(Arc::new(layer));
        self
    }

    /// Provides `value` to this worker's tasks that take a `State<T>` (it wins over a value of
    /// the same type registered process-wide with `kiq::provide`).
    pub fn provide<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.worker.provided.insert(value);
        self
    }

    /// Counts into `metrics` instead of the process's registry ([`Metrics::process`]).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.worker.metrics = metrics;
        self
    }

    /// Goes quiet once `quiet` fires: reads no new work (neither new messages nor other
    /// workers' abandoned ones) and finishes what it holds, then idles until shut down, as
    /// Sidekiq's quiet. `taskctl worker` fires it on SIGUSR1 or SIGTSTP. An operator can do the
    /// same through Redis ([`kiq_broker::Inspector::quiet_worker`]).
    pub fn quiet_on(mut self, quiet: CancellationToken) -> Self {
        self.worker.quiet = quiet;
        self
    }

    /// The worker.
    pub fn build(self) -> Worker {
        self.worker
    }
}

impl Worker {
    /// A builder of a worker running `registry`'s tasks from `broker`, with the default
    /// configuration.
    pub fn builder(broker: Broker, registry: Registry) -> WorkerBuilder {
        WorkerBuilder {
            worker: Worker {
                broker,
                registry: Arc::new(registry),
                config: WorkerConfig::default(),
                layers: Vec::new(),
                provided: Provided::default(),
                metrics: Metrics::process(),
                quiet: CancellationToken::new(),
            },
        }
    }

    /// A worker running `registry`'s tasks from `broker` under `config`.
    pub fn new(broker: Broker, registry: Registry, config: WorkerConfig) -> Self {
        Self::builder(broker, registry).config(config).build()
    }

    /// Wraps every task this worker runs in `layer` (see [`crate::middleware`]). Layers
    /// installed process-wide come first (outermost), then these, in the order added.
    pub fn layer(mut self, layer: impl Middleware) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// The queues this worker reads.
    pub fn queues(&self) -> Vec<String> {
        if self.config.queues.is_empty() {
            self.registry.queues()
        } else {
            self.config.queues.clone()
        }
    }

    fn check(&self, queues: &[String]) -> Result<(), WorkerError> {
        if queues.is_empty() {
            return Err(WorkerError::Config("no queues to read".into()));
        }
        if let Some(q) = queues.iter().find(|q| !kiq_broker::valid_queue_name(q)) {
            return Err(WorkerError::Config(format!("invalid queue name {q:?}")));
        }
        for s in &self.config.taskiq {
            s.check().map_err(WorkerError::Config)?;
        }
        if self.config.visibility_timeout < Duration::from_millis(300) {
            return Err(WorkerError::Config(
                "visibility timeout must be at least 300 ms".into(),
            ));
        }
        Ok(())
    }

    /// Consumes until `shutdown` fires, then stops fetching, lets in-flight tasks finish within
    /// the shutdown timeout, writes their completions, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, WorkerError> {
        let queues = self.queues();
        self.check(&queues)?;
        let config = self.config.clone();
        let concurrency = config.concurrency.max(1);
        self.metrics.set_concurrency(concurrency);
        let capacity = concurrency + config.prefetch;
        let consumer = self.broker.consumer(config.consumer.clone());
        // A URL of the wrong kind (a plain URL that reaches a cluster node) is a mistake to
        // report, not an outage to wait out. Redis being down is waited out by the loops.
        match self.broker.ping().await {
            Err(e @ BrokerError::Topology(_)) => return Err(WorkerError::Broker(e)),
            _ => {
                if let Ok(true) = consumer.holds_v1_data().await {
                    tracing::error!(
                        "this Redis holds kiq 0.1 (data model v1) keys, which this version does \
                         not read: let 0.1 workers drain their queues first (docs/redis-data-model.md)"
                    );
                }
            }
        }
        // Every queue is read as its partitions' priority lanes, most urgent first. (Redis
        // down at start: its queues alone, until the partition check reads the counts.)
        let mut physical = consumer
            .physical_queues(&queues)
            .await
            .unwrap_or_else(|_| queues.clone());
        tracing::info!(consumer = %config.consumer, queues = ?queues, partitions = ?physical, concurrency, prefetch = config.prefetch,
            visibility_timeout_ms = config.visibility_timeout.as_millis() as u64, "worker started");

        // The completer: every write goes through its queue, in order.
        //
        // The queue stays bounded: its bound is the worker's only backpressure from Redis
        // writes to reads. A message's slot is released as soon as its completion is *queued*
        // (`Executions::run` drops it after `send` returns), not once it is written, so the
        // fetch slots do not bound what waits here: with an unbounded queue, a completer slower
        // than execution (Redis slow to take writes, or retrying them with backoff while reads
        // still succeed) would let the fetcher go on reading and queue completions without
        // limit. Poison letters (`spawn_poisoned`) hold no slot at all. So it is not made
        // unbounded (#18, profile item 9).
        //
        // Each running task keeps room here for its completion from its start (see
        // `Executions::spawn_batch`), so at most `concurrency` of it is kept at once; the rest
        // (`capacity`, and at least a batch) is for what is queued, `running` marks and poison
        // letters, which therefore never wait on room kept by tasks that wait on them.
        let (writes, to_write) =
            mpsc::channel::<Write>(concurrency + capacity.max(completer::MAX_BATCH));
        let inflight = Arc::new(InFlight::default());
        let delayed = Arc::new(Notify::new());
        let stop_completer = CancellationToken::new();
        let completer = tokio::spawn(completer::run(
            consumer.clone(),
            to_write,
            stop_completer.clone(),
            Listeners {
                inflight: inflight.clone(),
                delayed: delayed.clone(),
            },
        ));
        let executor = Arc::new(
            Executor::new(
                self.registry.clone(),
                consumer.clone(),
                // Process-wide layers as installed now, outermost, then this worker's own.
                crate::middleware::installed()
                    .into_iter()
                    .chain(self.layers)
                    .collect(),
                config.cancel_grace,
            )
            .with_provided(self.provided)
            .with_metrics(self.metrics.clone())
            .with_states(writes.clone()),
        );
        let executions = Executions {
            executor: executor.clone(),
            permits: Arc::new(Semaphore::new(concurrency)),
            writes,
            tracker: TaskTracker::new(),
            inflight: inflight.clone(),
            order: Default::default(),
        };

        // The gate (paused queues, quiet) outlives the fetch epochs, as leases do.
        let (gate_tx, gate_rx) =
            tokio::sync::watch::channel(gate::initial(&consumer, &self.quiet, &shutdown).await);
        let gate_poke = Arc::new(Notify::new());
        let stop_gate = CancellationToken::new();
        let gate_loop = tokio::spawn(gate::run(
            consumer.clone(),
            gate_poke.clone(),
            self.quiet.clone(),
            gate_tx,
            stop_gate.clone(),
        ));

        // Leases outlive the fetcher: they must stay fresh while in-flight tasks drain.
        let mut task_names: Vec<String> = self
            .registry
            .tasks()
            .iter()
            .map(|d| d.name.to_string())
            .collect();
        task_names.sort();
        let info = kiq_broker::WorkerInfo::new(
            config.consumer.clone(),
            concurrency,
            queues.clone(),
            task_names,
        );
        let leases = LeaseKeeper::start(
            &consumer,
            config.clone(),
            inflight.clone(),
            info,
            self.metrics.clone(),
            gate_rx.clone(),
        )
        .await;
        // Taskiq streams: their messages are handed on to the tasks' queues, read below.
        if !config.taskiq.is_empty() {
            let unread: Vec<String> = self
                .registry
                .tasks()
                .iter()
                .filter(|d| !queues.iter().any(|q| q == d.queue))
                .map(|d| format!("{} (queue {})", d.name, d.queue))
                .collect();
            if !unread.is_empty() {
                tracing::warn!(tasks = ?unread, "Taskiq messages for these tasks wait for a worker that reads their queues: this one does not");
            }
        }
        let bridges: Vec<_> = config
            .taskiq
            .iter()
            .map(|stream| {
                tokio::spawn(taskiq_bridge::run(
                    consumer.clone(),
                    self.registry.clone(),
                    stream.clone(),
                    config.block,
                    shutdown.clone(),
                ))
            })
            .collect();
        // The fetch stage runs in epochs: a queue that gains partitions ends the epoch, and the
        // next one reads them too. In-flight tasks, the completer and leases carry on across.
        let mut report = WorkerReport::default();
        let mut lanes;
        // The fetch slots outlive an epoch: messages fetched in one still hold theirs in the
        // next, so a switch never lets the worker hold more than its capacity (plus one per
        // extra fetcher).
        let slots = Arc::new(Semaphore::new(capacity));
        let mut extra_slots = 0;
        loop {
            lanes = kiq_broker::priority::lanes(&physical);
            let epoch = shutdown.child_token();
            let watch = tokio::spawn(watch_partitions(
                consumer.clone(),
                queues.clone(),
                physical.clone(),
                epoch.clone(),
            ));
            let background = [
                tokio::spawn(subscriber::run(
                    consumer.clone(),
                    lanes.clone(),
                    delayed.clone(),
                    gate_poke.clone(),
                    executor.clone(),
                    epoch.clone(),
                )),
                tokio::spawn(forwarder::run(
                    consumer.clone(),
                    lanes.clone(),
                    delayed.clone(),
                    epoch.clone(),
                )),
                tokio::spawn(janitor::run(
                    consumer.clone(),
                    physical.clone(),
                    lanes.clone(),
                    config.consumer_retention,
                    epoch.clone(),
                )),
            ];

            // One fetch loop per reader the broker asks for (one in all on one Redis, one per
            // queue on a cluster), sharing the worker's slots. A fetcher waiting on an idle
            // queue holds one slot, so each fetcher beyond the first brings one: a busy queue
            // keeps the whole capacity, and a worker holds at most one message more per extra
            // queue.
            let groups = consumer.reader_groups(&lanes);
            let shared = groups.len() > 1;
            let extra = groups.len().saturating_sub(1);
            if extra > extra_slots {
                slots.add_permits(extra - extra_slots);
                extra_slots = extra;
            }
            // The fetchers are tasks of their own, not polled inside this future: a worker
            // awaited in `block_on` (a binary's `main`, `taskctl worker`) would otherwise fetch
            // on the main thread and hand every batch over to the runtime's threads, a wake-up
            // of another thread per batch (on an idle queue, per message).
            let fetchers = groups.into_iter().map(|group| {
                let fetcher = Fetcher {
                    consumer: consumer.clone(),
                    lanes: group,
                    slots: slots.clone(),
                    shared,
                    executions: executions.clone(),
                    recoverer: Recoverer {
                        consumer: consumer.clone(),
                        registry: self.registry.clone(),
                        config: config.clone(),
                        metrics: self.metrics.clone(),
                    },
                    config: config.clone(),
                    gate: gate_rx.clone(),
                };
                tokio::spawn(fetcher.run(epoch.clone()))
            });
            // Dropping this future (its caller gave up on it) ends the epoch's tasks too.
            let end_epoch = epoch.clone().drop_guard();
            let mut fetchers: FuturesUnordered<_> = fetchers.collect();
            let mut panicked = None;
            while let Some(fetched) = fetchers.next().await {
                match fetched {
                    Ok(fetched) => {
                        report.received += fetched.received;
                        report.reclaimed += fetched.reclaimed;
                    }
                    // A fetcher that panicked ends the epoch (the others stop after their
                    // current read) and then takes the worker down, as when it was polled here.
                    Err(e) if e.is_panic() => {
                        epoch.cancel();
                        panicked.get_or_insert(e.into_panic());
                    }
                    Err(e) => tracing::error!(error = %e, "a fetch loop ended abnormally"),
                }
            }
            if let Some(panic) = panicked {
                std::panic::resume_unwind(panic);
            }
            drop(end_epoch);
            for task in background {
                let _ = task.await;
            }
            let grown = watch.await.ok().flatten();
            match grown {
                Some(next) if !shutdown.is_cancelled() => {
                    tracing::info!(partitions = ?next, "a queue gained partitions: reading them too");
                    physical = next;
                }
                _ => break,
            }
        }

        for bridge in bridges {
            if let Err(e) = bridge.await {
                tracing::error!(error = %e, "a Taskiq stream's bridge ended abnormally");
            }
        }
        stop_gate.cancel();
        let _ = gate_loop.await;
        tracing::info!("worker stopping: no more fetching, draining in-flight tasks");
        executions.tracker.close();
        if tokio::time::timeout(config.shutdown_timeout, executions.tracker.wait())
            .await
            .is_err()
        {
            report.abandoned = concurrency.saturating_sub(executions.permits.available_permits());
            tracing::warn!(
                abandoned = report.abandoned,
                "shutdown timeout reached; unfinished tasks stay pending and will be redelivered"
            );
        }
        drop(executions);
        stop_completer.cancel();
        report.unwritten = completer.await.unwrap_or(0);
        // The tasks left running are pending again (their messages will be redelivered).
        let abandoned = executor.running.abandoned();
        if !abandoned.is_empty() {
            let _ = consumer.write(&abandoned).await;
        }
        leases.stop().await;
        let _ = consumer.remove_heartbeat().await;
        // Leave the group tidy: a consumer that holds nothing is deleted on a clean exit.
        if report.abandoned == 0 && report.unwritten == 0 {
            for lane in &lanes {
                let _ = consumer.leave(lane).await;
            }
        }
        tracing::info!(
            received = report.received,
            reclaimed = report.reclaimed,
            "worker stopped"
        );
        Ok(report)
    }
}

/// How often a worker checks whether its queues gained partitions.
const PARTITION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends `epoch` and returns the new physical queues once `queues` have more partitions than
/// `reading`; returns `None` when the epoch ends otherwise (shutdown). A failed check is
/// tried again at the next tick.
async fn watch_partitions(
    consumer: kiq_broker::Consumer,
    queues: Vec<String>,
    reading: Vec<String>,
    epoch: CancellationToken,
) -> Option<Vec<String>> {
    loop {
        tokio::select! {
            _ = epoch.cancelled() => return None,
            _ = tokio::time::sleep(PARTITION_CHECK) => {}
        }
        if let Ok(now) = consumer.physical_queues(&queues).await {
            if now.iter().any(|q| !reading.contains(q)) {
                epoch.cancel();
                return Some(now);
            }
        }
    }
}
