//! The worker loop of one process: read batches through the consumer group, run tasks with
//! bounded concurrency, hand completions to the completer, and drain on shutdown.
//!
//! Flow control: a message holds a *slot* from the moment it is read until its completion is
//! queued, so at most `concurrency + prefetch` messages are held by this process; each read
//! asks for as many messages as there are free slots (one XREADGROUP per batch, not per task).

use std::sync::Arc;
use std::time::Duration;

use kiq_broker::{Broker, BrokerError, Completion, StreamReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::completer;
use crate::config::WorkerConfig;
use crate::execute::execute;
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
}

impl Worker {
    /// A worker running `registry`'s tasks from `broker` under `config`.
    pub fn new(broker: Broker, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            broker,
            registry: Arc::new(registry),
            config,
        }
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
        let concurrency = self.config.concurrency.max(1);
        let capacity = concurrency + self.config.prefetch;
        let slots = Arc::new(Semaphore::new(capacity));
        let exec = Arc::new(Semaphore::new(concurrency));
        let (tx, rx) = mpsc::channel::<Completion>(capacity.max(completer::MAX_BATCH));
        let stop_completer = CancellationToken::new();
        let completer = tokio::spawn(completer::run(
            self.broker.clone(),
            rx,
            stop_completer.clone(),
        ));
        let tracker = TaskTracker::new();
        tracing::info!(consumer = %self.config.consumer, queues = ?queues, concurrency, prefetch = self.config.prefetch, "worker started");

        let consumer: Arc<str> = self.config.consumer.as_str().into();
        let mut report = WorkerReport::default();
        let mut reader: Option<StreamReader> = None;
        let mut backoff = Duration::from_millis(100);
        let mut redis_down = false;
        'fetch: while !shutdown.is_cancelled() {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let r = match reader.as_mut() {
                Some(r) => r,
                None => match self.broker.reader(&queues, &self.config.consumer).await {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        if !redis_down {
                            tracing::warn!(error = %e, "worker cannot reach Redis; retrying");
                            redis_down = true;
                        }
                        drop(permits);
                        if sleep_or_shutdown(backoff, &shutdown).await {
                            break 'fetch;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            // Not raced against shutdown: a read cut off mid-flight could leave messages
            // delivered to us but never seen. BLOCK bounds how long this takes.
            match r.read(permits.len(), self.config.block).await {
                Ok(deliveries) => {
                    if redis_down {
                        tracing::info!("worker reconnected to Redis");
                        redis_down = false;
                    }
                    backoff = Duration::from_millis(100);
                    report.received += deliveries.len() as u64;
                    for delivery in deliveries {
                        let Some(slot) = permits.pop() else { break };
                        let registry = self.registry.clone();
                        let exec = exec.clone();
                        let tx = tx.clone();
                        let consumer = consumer.clone();
                        tracker.spawn(run_one(registry, consumer, exec, tx, slot, delivery));
                    }
                }
                Err(e) => {
                    if !redis_down {
                        tracing::warn!(error = %e, "reading from Redis failed; reconnecting");
                        redis_down = true;
                    }
                    reader = None;
                    drop(permits);
                    if sleep_or_shutdown(backoff, &shutdown).await {
                        break 'fetch;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }

        tracing::info!("worker stopping: no more fetching, draining in-flight tasks");
        tracker.close();
        if tokio::time::timeout(self.config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            report.abandoned = concurrency.saturating_sub(exec.available_permits());
            tracing::warn!(
                abandoned = report.abandoned,
                "shutdown timeout reached; unfinished tasks stay pending and will be redelivered"
            );
        }
        drop(tx);
        stop_completer.cancel();
        report.unwritten = completer.await.unwrap_or(0);
        tracing::info!(received = report.received, "worker stopped");
        Ok(report)
    }
}

async fn run_one(
    registry: Arc<Registry>,
    consumer: Arc<str>,
    exec: Arc<Semaphore>,
    completions: mpsc::Sender<Completion>,
    slot: OwnedSemaphorePermit,
    delivery: kiq_broker::Delivery,
) {
    let Ok(_running) = exec.acquire().await else {
        return;
    };
    let completion = execute(&registry, &consumer, delivery).await;
    // The slot is released only once the completion is queued: flow control covers writing.
    let _ = completions.send(completion).await;
    drop(slot);
}

/// Sleeps for `d`; returns true if shutdown fired first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}
