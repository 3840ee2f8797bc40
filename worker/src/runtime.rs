//! The worker loop of one process: read batches through the consumer group, run tasks with
//! bounded concurrency, hand completions to the completer, and drain on shutdown. Beside it
//! run three timers: the lease refresher (keeps what this process holds from being taken),
//! the reclaimer (takes over what dead workers held) and the promoter (moves due retries into
//! their stream).
//!
//! Flow control: a message holds a *slot* from the moment it is read (or reclaimed) until its
//! completion is queued, so at most `concurrency + prefetch` messages are held by this process;
//! each read asks for as many messages as there are free slots (one XREADGROUP per batch).

use std::sync::Arc;
use std::time::Duration;

use kiq_broker::envelope::now_ms;
use kiq_broker::{Broker, BrokerError, Completion, Delivery, StreamReader};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::completer::{self, Hooks};
use crate::config::WorkerConfig;
use crate::execute::{execute, poisoned, Running};
use crate::inflight::InFlight;
use crate::registry::Registry;

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
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
    layers: Vec<Arc<dyn crate::middleware::Middleware>>,
}

/// What every message's execution shares.
#[derive(Clone)]
struct Pipeline {
    running: Arc<Running>,
    registry: Arc<Registry>,
    consumer: Arc<str>,
    exec: Arc<Semaphore>,
    completions: mpsc::Sender<Completion>,
    tracker: TaskTracker,
    inflight: Arc<InFlight>,
}

impl Pipeline {
    /// Runs `delivery`; `slot` is released once its completion is queued.
    async fn run(
        &self,
        slot: OwnedSemaphorePermit,
        running: OwnedSemaphorePermit,
        delivery: Delivery,
        precancelled: bool,
    ) {
        let completion = execute(
            &self.registry,
            &self.consumer,
            delivery,
            &self.running,
            precancelled,
        )
        .await;
        drop(running);
        let _ = self.completions.send(completion).await;
        drop(slot);
    }

    /// Checks a batch's cancel marks (one MGET), then runs each message with one of `slots`.
    /// XREADGROUP's COUNT applies per stream, so a read over several queues can return more
    /// messages than slots were taken for: those wait here for a slot (they are already held
    /// and leased by this process), never dropped.
    fn spawn_batch(
        &self,
        broker: Broker,
        slots_sem: Arc<Semaphore>,
        slots: Vec<OwnedSemaphorePermit>,
        deliveries: Vec<Delivery>,
        cancels_active: bool,
    ) {
        for d in &deliveries {
            self.inflight.insert(&d.queue, &d.stream_id);
        }
        let p = self.clone();
        self.tracker.spawn(async move {
            let cancelled = if cancels_active {
                precheck(&broker, &deliveries).await
            } else {
                vec![false; deliveries.len()]
            };
            let mut slots = slots.into_iter();
            for (delivery, cancelled) in deliveries.into_iter().zip(cancelled) {
                let slot = match slots.next() {
                    Some(s) => s,
                    None => match slots_sem.clone().acquire_owned().await {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                };
                // Execution permits are taken here, in delivery order (the read returns the
                // most urgent lanes first): spawned tasks are polled in no set order.
                let Ok(running) = p.exec.clone().acquire_owned().await else {
                    return;
                };
                let q = p.clone();
                p.tracker
                    .spawn(async move { q.run(slot, running, delivery, cancelled).await });
            }
        });
    }

    /// Dead-letters a message delivered too many times.
    fn spawn_poisoned(&self, delivery: Delivery) {
        self.inflight.insert(&delivery.queue, &delivery.stream_id);
        let p = self.clone();
        self.tracker.spawn(async move {
            let _ = p.completions.send(poisoned(&p.consumer, delivery)).await;
        });
    }
}

impl Worker {
    /// A worker running `registry`'s tasks from `broker` under `config`.
    pub fn new(broker: Broker, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            broker,
            registry: Arc::new(registry),
            config,
            layers: Vec::new(),
        }
    }

    /// Wraps every task this worker runs in `layer` (see [`crate::middleware`]). Layers
    /// installed process-wide come first (outermost), then these, in the order added.
    pub fn layer(mut self, layer: impl crate::middleware::Middleware) -> Self {
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

    /// Consumes until `shutdown` fires, then stops fetching, lets in-flight tasks finish within
    /// the shutdown timeout, writes their completions, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, WorkerError> {
        let queues = self.queues();
        if queues.is_empty() {
            return Err(WorkerError::Config("no queues to read".into()));
        }
        for q in &queues {
            if !kiq_broker::broker::valid_queue_name(q) {
                return Err(WorkerError::Config(format!("invalid queue name {q:?}")));
            }
        }
        if self.config.visibility_timeout < Duration::from_millis(300) {
            return Err(WorkerError::Config(
                "visibility timeout must be at least 300 ms".into(),
            ));
        }
        let concurrency = self.config.concurrency.max(1);
        crate::metrics::set_concurrency(concurrency);
        let capacity = concurrency + self.config.prefetch;
        let slots = Arc::new(Semaphore::new(capacity));
        let (tx, rx) = mpsc::channel::<Completion>(capacity.max(completer::MAX_BATCH));
        let inflight = Arc::new(InFlight::default());
        let retry_scheduled = Arc::new(Notify::new());
        let stop_completer = CancellationToken::new();
        let completer = tokio::spawn(completer::run(
            self.broker.clone(),
            rx,
            stop_completer.clone(),
            Hooks {
                inflight: inflight.clone(),
                retry_scheduled: retry_scheduled.clone(),
            },
        ));
        let mut running = Running::new(self.config.cancel_grace, Some(self.broker.clone()));
        running.marks = Some(tx.clone());
        running.layers = crate::middleware::installed();
        running.layers.extend(self.layers.iter().cloned());
        let running = Arc::new(running);
        let pipeline = Pipeline {
            running: running.clone(),
            registry: self.registry.clone(),
            consumer: self.config.consumer.as_str().into(),
            exec: Arc::new(Semaphore::new(concurrency)),
            completions: tx,
            tracker: TaskTracker::new(),
            inflight: inflight.clone(),
        };
        // Every queue is read as its priority lanes, most urgent first.
        let lanes = kiq_broker::priority::lanes(&queues);
        tracing::info!(consumer = %self.config.consumer, queues = ?queues, concurrency, prefetch = self.config.prefetch,
            visibility_timeout_ms = self.config.visibility_timeout.as_millis() as u64, "worker started");

        // Leases outlive the fetch loop: they must stay fresh while in-flight tasks drain.
        let stop_leases = CancellationToken::new();
        let info = kiq_broker::WorkerInfo {
            consumer: self.config.consumer.clone(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            concurrency,
            queues: queues.clone(),
            started_ms: now_ms(),
            heartbeat_ms: now_ms(),
            in_flight: 0,
        };
        let leases = tokio::spawn(refresh_leases(
            self.broker.clone(),
            self.config.clone(),
            inflight.clone(),
            info,
            stop_leases.clone(),
        ));
        let wakes = tokio::spawn(listen_for_wakes(
            self.broker.clone(),
            lanes.clone(),
            retry_scheduled.clone(),
            running,
            shutdown.clone(),
        ));
        let promoter = tokio::spawn(promote(
            self.broker.clone(),
            lanes.clone(),
            retry_scheduled,
            shutdown.clone(),
        ));

        let mut report = WorkerReport::default();
        (report.received, report.reclaimed) =
            self.fetch(&lanes, &slots, &pipeline, &shutdown).await;

        tracing::info!("worker stopping: no more fetching, draining in-flight tasks");
        let _ = promoter.await;
        let _ = wakes.await;
        pipeline.tracker.close();
        if tokio::time::timeout(self.config.shutdown_timeout, pipeline.tracker.wait())
            .await
            .is_err()
        {
            report.abandoned = concurrency.saturating_sub(pipeline.exec.available_permits());
            tracing::warn!(
                abandoned = report.abandoned,
                "shutdown timeout reached; unfinished tasks stay pending and will be redelivered"
            );
        }
        let running = pipeline.running.clone();
        drop(pipeline);
        stop_completer.cancel();
        report.unwritten = completer.await.unwrap_or(0);
        // The tasks left running are pending again (their messages will be redelivered).
        let abandoned = running.abandoned_marks();
        if !abandoned.is_empty() {
            let _ = self.broker.complete(&abandoned).await;
        }
        stop_leases.cancel();
        let _ = leases.await;
        let _ = self.broker.remove_heartbeat(&self.config.consumer).await;
        // Leave the group tidy: a consumer that holds nothing is deleted on a clean exit.
        if report.abandoned == 0 && report.unwritten == 0 {
            for q in &lanes {
                let _ = self.broker.remove_consumer(q, &self.config.consumer).await;
            }
        }
        tracing::info!(
            received = report.received,
            reclaimed = report.reclaimed,
            "worker stopped"
        );
        Ok(report)
    }

    /// The fetch loop; returns how many messages it read and how many it took over from dead
    /// workers. Reclaiming happens here too, so one loop owns the free slots: a separate
    /// reclaimer would find them all held by the blocked read.
    async fn fetch(
        &self,
        queues: &[String],
        slots: &Arc<Semaphore>,
        pipeline: &Pipeline,
        shutdown: &CancellationToken,
    ) -> (u64, u64) {
        let mut received = 0;
        let mut reclaimed = 0;
        let reclaim_every = self.config.reclaim_interval();
        let block = self.config.block.min(reclaim_every);
        let mut next_reclaim = tokio::time::Instant::now();
        let mut next_prune = tokio::time::Instant::now();
        let mut reader: Option<StreamReader> = None;
        let mut backoff = Duration::from_millis(100);
        let mut redis_down = false;
        while !shutdown.is_cancelled() {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            if tokio::time::Instant::now() >= next_reclaim {
                reclaimed += self.reclaim(queues, slots, &mut permits, pipeline).await;
                next_reclaim = tokio::time::Instant::now() + reclaim_every;
                if tokio::time::Instant::now() >= next_prune {
                    self.prune_consumers(queues).await;
                    next_prune = tokio::time::Instant::now() + Duration::from_secs(60);
                }
                if permits.is_empty() {
                    continue;
                }
            }
            let r = match reader.as_mut() {
                Some(r) => r,
                None => match self.broker.reader(queues, &self.config.consumer).await {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        if !redis_down {
                            tracing::warn!(error = %e, "worker cannot reach Redis; retrying");
                            redis_down = true;
                        }
                        drop(permits);
                        if sleep_or_shutdown(backoff, shutdown).await {
                            break;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            // Not raced against shutdown: a read cut off mid-flight could leave messages
            // delivered to us but never seen. BLOCK bounds how long this takes.
            match r.read_batch(permits.len(), block).await {
                Ok(kiq_broker::ReadBatch {
                    deliveries,
                    cancels_active,
                }) => {
                    if redis_down {
                        tracing::info!("worker reconnected to Redis");
                        redis_down = false;
                    }
                    backoff = Duration::from_millis(100);
                    received += deliveries.len() as u64;
                    // The cancellation check runs beside the fetch loop, which goes straight
                    // back to reading: the batch already holds its slots.
                    let taken: Vec<_> = permits
                        .drain(..deliveries.len().min(permits.len()))
                        .collect();
                    pipeline.spawn_batch(
                        self.broker.clone(),
                        slots.clone(),
                        taken,
                        deliveries,
                        cancels_active,
                    );
                }
                Err(e) => {
                    if !redis_down {
                        tracing::warn!(error = %e, "reading from Redis failed; reconnecting");
                        redis_down = true;
                    }
                    reader = None;
                    drop(permits);
                    if sleep_or_shutdown(backoff, shutdown).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        (received, reclaimed)
    }

    /// Deletes consumers that died long ago and hold nothing, so the group does not grow with
    /// every restart.
    async fn prune_consumers(&self, queues: &[String]) {
        let idle = self.config.consumer_retention;
        for q in queues {
            match self.broker.prune_consumers(q, idle).await {
                Ok(n) if n > 0 => {
                    tracing::info!(queue = %q, removed = n, "removed long-gone consumers")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "pruning consumers failed"),
            }
        }
    }

    /// Takes over messages whose worker stopped refreshing them, using the slots in `permits`.
    async fn reclaim(
        &self,
        queues: &[String],
        slots: &Arc<Semaphore>,
        permits: &mut Vec<OwnedSemaphorePermit>,
        pipeline: &Pipeline,
    ) -> u64 {
        let mut taken = 0;
        let default_visibility = self.config.visibility_timeout;
        let registry = self.registry.clone();
        let visibility_of = move |env: &kiq_broker::Envelope| {
            registry
                .get(&env.task)
                .and_then(|d| d.visibility_timeout)
                .map(|v| v.max(default_visibility))
                .unwrap_or(default_visibility)
        };
        let per_task: Option<&(dyn Fn(&kiq_broker::Envelope) -> Duration + Sync)> =
            if self.registry.has_custom_visibility() {
                Some(&visibility_of)
            } else {
                None
            };
        for queue in queues {
            if permits.is_empty() {
                break;
            }
            let r = match self
                .broker
                .reclaim(
                    queue,
                    &self.config.consumer,
                    default_visibility,
                    self.config.max_deliveries,
                    permits.len(),
                    per_task,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, %queue, "reclaim failed; will retry");
                    continue;
                }
            };
            let n = (r.deliveries.len() + r.poisoned.len()) as u64;
            if n > 0 {
                crate::metrics::redelivered(n);
                tracing::info!(%queue, redelivered = r.deliveries.len(), poisoned = r.poisoned.len(), "took over messages of a stopped worker");
            }
            taken += n;
            for d in r.poisoned {
                pipeline.spawn_poisoned(d);
            }
            let n = r.deliveries.len().min(permits.len());
            let held: Vec<_> = permits.drain(..n).collect();
            // Reclaim is rare: always check the marks.
            pipeline.spawn_batch(self.broker.clone(), slots.clone(), held, r.deliveries, true);
        }
        taken
    }
}

/// Keeps the leases of everything this process holds fresh, and this worker's heartbeat, until
/// `stop`.
async fn refresh_leases(
    broker: Broker,
    config: WorkerConfig,
    inflight: Arc<InFlight>,
    mut info: kiq_broker::WorkerInfo,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.lease_refresh_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Finished-task indexes are trimmed about once a minute (any worker may do it).
    let mut last_trim = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // As often as results expire (at most once a minute), so indexes stay in step.
        let trim_every = broker
            .config()
            .result_ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        if last_trim.elapsed() >= trim_every {
            last_trim = tokio::time::Instant::now();
            for queue in &info.queues {
                if let Err(e) = broker.trim_indexes(queue).await {
                    tracing::debug!(error = %e, %queue, "trimming task indexes failed; will retry");
                }
            }
        }
        info.heartbeat_ms = now_ms();
        info.in_flight = inflight.len() as u64;
        crate::metrics::set_in_flight(inflight.len());
        if let Err(e) = broker.heartbeat(&info).await {
            tracing::debug!(error = %e, "heartbeat failed; will retry");
        }
        for (queue, ids) in inflight.snapshot() {
            match broker.refresh_leases(&queue, &config.consumer, &ids).await {
                Ok(lost) if !lost.is_empty() => {
                    tracing::warn!(%queue, count = lost.len(), "messages were taken over by another worker while running here; they may run twice");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "lease refresh failed; will retry"),
            }
        }
    }
}

/// Moves due delayed messages (delays and retries) into their streams, sleeping until the next
/// one is due (at most 1 s) or until woken by a producer's announcement or this worker's own
/// retry, until `shutdown`.
async fn promote(
    broker: Broker,
    queues: Vec<String>,
    retry_scheduled: Arc<Notify>,
    shutdown: CancellationToken,
) {
    const MAX_SLEEP: Duration = Duration::from_secs(1);
    loop {
        let now = now_ms();
        let mut next_due: Option<u64> = None;
        for queue in &queues {
            match broker.promote_due(queue, now, 1000).await {
                Ok(p) => {
                    if p.moved > 0 {
                        tracing::debug!(%queue, moved = p.moved, "promoted due retries");
                    }
                    // A full batch means more may be due right now.
                    let next = if p.moved >= 1000 {
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
                    tracing::debug!(error = %e, %queue, "promoting retries failed; will retry")
                }
            }
        }
        let sleep = next_due
            .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = retry_scheduled.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Which of `deliveries` were cancelled before they ran: one MGET per batch. If Redis cannot
/// say, they run (cancellation is best effort against a Redis outage).
async fn precheck(broker: &Broker, deliveries: &[Delivery]) -> Vec<bool> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let ids: Vec<Option<String>> = deliveries
        .iter()
        .map(|d| {
            d.payload
                .as_deref()
                .and_then(|p| kiq_broker::codec::decode::<Id>(p).ok())
                .map(|i| i.id)
        })
        .collect();
    let known: Vec<&str> = ids.iter().flatten().map(String::as_str).collect();
    let marks = match broker.cancelled(&known).await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "cancellation check failed; running the batch");
            return vec![false; deliveries.len()];
        }
    };
    let mut marks = marks.into_iter();
    ids.iter()
        .map(|id| id.is_some() && marks.next().unwrap_or(false))
        .collect()
}

/// Wakes the promoter whenever a producer announces a delayed message on one of `queues`, so a
/// delayed task starts on time even when it was added after the promoter went to sleep; and
/// fires the cancellation token of a running task when it is cancelled.
async fn listen_for_wakes(
    broker: Broker,
    queues: Vec<String>,
    wake: Arc<Notify>,
    running: Arc<Running>,
    shutdown: CancellationToken,
) {
    use futures_util::StreamExt;
    let cancel_channel = broker.keys().cancel_channel();
    let mut channels: Vec<String> = queues
        .iter()
        .map(|q| broker.keys().wake_channel(q))
        .collect();
    channels.push(cancel_channel.clone());
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let mut pubsub = match broker.client().get_async_pubsub().await {
            Ok(p) => p,
            Err(_) => {
                if sleep_or_shutdown(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if pubsub.subscribe(&channels).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(100);
        // Anything announced while we were not subscribed is found by this re-plan.
        wake.notify_one();
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) if m.get_channel_name() == cancel_channel => {
                        let id = String::from_utf8_lossy(m.get_payload_bytes()).into_owned();
                        if running.cancel(&id) {
                            tracing::info!(task_id = %id, "cancelling a running task");
                        }
                    }
                    Some(_) => wake.notify_one(),
                    None => break,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Sleeps for `d`; returns true if shutdown fired first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}
