//! The fetch loop: fills free slots with new messages (one read per batch, as many as there are
//! free slots) and, every reclaim interval, with messages of stopped workers.

use std::sync::Arc;

use kiq_broker::{Consumer, Gate, ReadBatch, StreamReader};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::executions::Executions;
use super::outage::Outage;
use super::recoverer::Recoverer;
use crate::config::WorkerConfig;

/// Reads `lanes` (most urgent first) into `slots`.
pub(crate) struct Fetcher {
    pub consumer: Consumer,
    pub lanes: Vec<String>,
    pub slots: Arc<Semaphore>,
    /// Whether other fetchers share `slots`.
    pub shared: bool,
    pub executions: Executions,
    pub recoverer: Recoverer,
    pub config: WorkerConfig,
    /// Which lanes are paused, and whether the worker went quiet.
    pub gate: watch::Receiver<Gate>,
}

/// What the fetcher did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fetched {
    pub received: u64,
    pub reclaimed: u64,
}

impl Fetcher {
    /// Fetches until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Fetched {
        let mut done = Fetched::default();
        let reclaim_every = self.config.reclaim_interval();
        let block = self.config.block.min(reclaim_every);
        let mut next_reclaim = tokio::time::Instant::now();
        let mut reader: Option<StreamReader> = None;
        let mut outage = Outage::default();
        while !shutdown.is_cancelled() {
            // The lanes to read now: none once quiet, and none of a paused queue's. A change
            // reopens the reader on the new set (most urgent first, as before).
            let lanes: Vec<String> = {
                let gate = self.gate.borrow_and_update();
                if gate.quiet {
                    Vec::new()
                } else {
                    self.lanes
                        .iter()
                        .filter(|l| !gate.lane_paused(l))
                        .cloned()
                        .collect()
                }
            };
            if lanes.is_empty() {
                reader = None;
                tokio::select! {
                    changed = self.gate.changed() => if changed.is_err() { break },
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            if reader
                .as_ref()
                .is_some_and(|r| r.lanes() != lanes.as_slice())
            {
                reader = None;
            }
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            // The wait for a slot can be long (every slot busy with long tasks): a pause or
            // quiet that came meanwhile holds for this read too.
            if self.gate.has_changed().unwrap_or(false) {
                continue;
            }
            let mut permits = vec![first];
            // A fetcher that shares the slots with others (one per queue on a cluster) holds
            // one slot while it waits on an idle queue: the first message it gets switches it
            // to draining, which takes every free slot. Otherwise a fetcher blocked on an idle
            // queue would sit on every slot while another queue's messages wait.
            let waiting = self.shared && reader.as_ref().is_some_and(|r| r.will_block());
            if !waiting {
                while let Ok(p) = self.slots.clone().try_acquire_owned() {
                    permits.push(p);
                }
            }
            if tokio::time::Instant::now() >= next_reclaim {
                done.reclaimed += self
                    .recoverer
                    .pass(&lanes, &self.slots, &mut permits, &self.executions)
                    .await;
                next_reclaim = tokio::time::Instant::now() + reclaim_every;
                if permits.is_empty() {
                    continue;
                }
            }
            let r = match reader.as_mut() {
                Some(r) => r,
                None => match self.consumer.reader(&lanes).await {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        drop(permits);
                        if !outage
                            .wait(&e, "worker cannot reach Redis; retrying", &shutdown)
                            .await
                        {
                            break;
                        }
                        continue;
                    }
                },
            };
            // Not raced against shutdown: a read cut off mid-flight could leave messages
            // delivered to us but never seen. BLOCK bounds how long this takes.
            match r.read_batch(permits.len(), block).await {
                Ok(ReadBatch {
                    deliveries,
                    cancels_active,
                }) => {
                    outage.over();
                    done.received += deliveries.len() as u64;
                    // The cancellation check runs beside the fetch loop, which goes straight
                    // back to reading: the batch already holds its slots.
                    let taken: Vec<_> = permits
                        .drain(..deliveries.len().min(permits.len()))
                        .collect();
                    self.executions.spawn_batch(
                        self.slots.clone(),
                        taken,
                        deliveries,
                        cancels_active,
                    );
                    // The batch (and the completions of what it runs at once) goes first: on a
                    // runtime of one thread, sending the next read before them would put its
                    // round trip into every message's latency.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    reader = None;
                    drop(permits);
                    if !outage
                        .wait(&e, "reading from Redis failed; reconnecting", &shutdown)
                        .await
                    {
                        break;
                    }
                }
            }
        }
        done
    }
}
