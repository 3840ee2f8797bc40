//! Starting the executions of held messages: in delivery order, within the execution permits,
//! each with room kept in the completer's queue, and holding its slot until its completion is
//! queued there.

use std::sync::Arc;

use kiq_broker::{Delivery, Write};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::inflight::InFlight;
use crate::execute::{poisoned, Executor};

/// What every message's execution in this process shares.
#[derive(Clone)]
pub(crate) struct Executions {
    pub executor: Arc<Executor>,
    /// Tasks running at once (the concurrency).
    pub permits: Arc<Semaphore>,
    /// The completer's queue.
    pub writes: mpsc::Sender<Write>,
    pub tracker: TaskTracker,
    pub inflight: Arc<InFlight>,
    /// Batches hand their messages to the concurrency permits in the order they were read:
    /// each takes a ticket when spawned and waits for its turn (each batch is a task of its
    /// own, and two could otherwise reach the permits in either order: a high-priority message
    /// read after the last critical one could start before it).
    pub order: Arc<BatchOrder>,
}

/// The turn of each batch (see [`Executions::order`]).
#[derive(Debug)]
pub(crate) struct BatchOrder {
    next_ticket: std::sync::atomic::AtomicU64,
    turn: tokio::sync::watch::Sender<u64>,
}

impl Default for BatchOrder {
    fn default() -> Self {
        Self {
            next_ticket: std::sync::atomic::AtomicU64::new(0),
            turn: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Passes the turn on when batch `ticket` is done handing out its messages, however its task
/// ends (it never holds up the batches after it, even if it never got its turn).
struct Turn(Arc<BatchOrder>, u64);

impl Drop for Turn {
    fn drop(&mut self) {
        let next = self.1 + 1;
        self.0.turn.send_modify(|t| *t = (*t).max(next));
    }
}

impl Executions {
    /// Runs `delivery`, then queues its completion in the room kept for it; `slot` is released
    /// then. (Only what it needs is passed: not a clone of every shared handle.)
    async fn run(
        executor: Arc<Executor>,
        slot: OwnedSemaphorePermit,
        running: OwnedSemaphorePermit,
        room: mpsc::OwnedPermit<Write>,
        delivery: Delivery,
        precancelled: bool,
    ) {
        // Boxed: the execution's state machine is large, and a spawned future is moved by
        // value several times (into the task's cell, and its stages); a box moves once.
        let completion = Box::pin(executor.execute(delivery, precancelled)).await;
        drop(running);
        room.send(Write::Completion(completion));
        drop(slot);
    }

    /// Checks a batch's cancel marks (one round trip) when cancellations may be active, then
    /// runs each message with one of `slots`. XREADGROUP's COUNT applies per stream, so a read
    /// over several lanes can return more messages than slots were taken for: those wait here
    /// for a slot (they are already held and leased by this process), never dropped.
    pub fn spawn_batch(
        &self,
        slots_sem: Arc<Semaphore>,
        slots: Vec<OwnedSemaphorePermit>,
        deliveries: Vec<Delivery>,
        cancels_active: bool,
    ) {
        self.inflight.insert_many(
            deliveries
                .iter()
                .map(|d| (d.lane.as_str(), d.stream_id.as_str())),
        );
        let ticket = self
            .order
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Made here, so the turn passes on even if the task never runs.
        let turn_guard = Turn(self.order.clone(), ticket);
        let p = self.clone();
        self.tracker.spawn(async move {
            let mut turn_guard = Some(turn_guard);
            let cancelled = if cancels_active {
                precheck(&p.executor, &deliveries).await
            } else {
                vec![false; deliveries.len()]
            };
            // Wait for the batches read before this one to hand out their messages.
            let mut turn = p.order.turn.subscribe();
            let _ = turn.wait_for(|t| *t >= ticket).await;
            let mut slots = slots.into_iter();
            for (delivery, cancelled) in deliveries.into_iter().zip(cancelled) {
                let slot = match slots.next() {
                    Some(s) => s,
                    None => {
                        // A message read beyond this batch's slots waits for one; the batches
                        // after it hold theirs, so it must not keep them waiting for its turn
                        // (they would never free a slot: a deadlock). It gives its turn up.
                        drop(turn_guard.take());
                        match slots_sem.clone().acquire_owned().await {
                            Ok(s) => s,
                            Err(_) => return,
                        }
                    }
                };
                // Execution permits are taken here, in delivery order (the read returns the
                // most urgent lanes first): spawned tasks are polled in no set order.
                let Ok(running) = p.permits.clone().acquire_owned().await else {
                    return;
                };
                // Room in the completer's queue is kept for the completion before the task
                // starts: when the queue is full, this batch waits here (woken once the
                // completer takes a batch), instead of every finished task waiting for room
                // on its own. The queue holds room for every slot and more (see `Worker::run`),
                // so a `running` mark always finds room once the completer has taken what is
                // queued.
                let Ok(room) = p.writes.clone().reserve_owned().await else {
                    return;
                };
                p.tracker.spawn(Self::run(
                    p.executor.clone(),
                    slot,
                    running,
                    room,
                    delivery,
                    cancelled,
                ));
            }
        });
    }

    /// Dead-letters a message delivered too many times.
    pub fn spawn_poisoned(&self, delivery: Delivery) {
        self.inflight.insert(&delivery.lane, &delivery.stream_id);
        let p = self.clone();
        self.tracker.spawn(async move {
            let c = poisoned(p.executor.consumer(), delivery);
            let _ = p.writes.send(Write::Completion(c)).await;
        });
    }
}

/// Which of `deliveries` were cancelled before they ran. If Redis cannot say, they run
/// (cancellation is best effort against a Redis outage).
async fn precheck(executor: &Executor, deliveries: &[Delivery]) -> Vec<bool> {
    let consumer = executor.consumer();
    let ids: Vec<Option<String>> = deliveries
        .iter()
        .map(|d| d.payload.as_deref().and_then(|p| consumer.task_id(p)))
        .collect();
    let known: Vec<&str> = ids.iter().flatten().map(String::as_str).collect();
    let marks = match consumer.cancelled(&known).await {
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
