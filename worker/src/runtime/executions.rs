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
            let mut queue = deliveries.into_iter().zip(cancelled);
            while let Some((delivery, cancelled)) = queue.next() {
                let admitted = async {
                    let slot = match slots.next() {
                        Some(s) => s,
                        None => {
                            // A message read beyond this batch's slots waits for one; the
                            // batches after it hold theirs, so it must not keep them waiting
                            // for its turn (they would never free a slot: a deadlock). It
                            // gives its turn up.
                            drop(turn_guard.take());
                            slots_sem.clone().acquire_owned().await.ok()?
                        }
                    };
                    // Execution permits are taken here, in delivery order (the read returns
                    // the most urgent lanes first): spawned tasks are polled in no set order.
                    let running = p.permits.clone().acquire_owned().await.ok()?;
                    // Room in the completer's queue is kept for the completion before the
                    // task starts: when the queue is full, this batch waits here (woken once
                    // the completer takes a batch), instead of every finished task waiting for
                    // room on its own. Room is kept by at most `concurrency` tasks, and the
                    // queue holds more (see `Worker::run`), so a `running` mark always finds
                    // room once the completer has taken what is queued.
                    let room = p.writes.clone().reserve_owned().await.ok()?;
                    Some((slot, running, room))
                };
                let Some((slot, running, room)) = admitted.await else {
                    // The worker is stopping (a semaphore closed, or the completer is gone):
                    // the rest of the batch is not run here. Its messages stay pending in
                    // Redis, delivered again later; this process stops holding (and leasing)
                    // them.
                    let left: Vec<Delivery> = std::iter::once(delivery)
                        .chain(queue.map(|(d, _)| d))
                        .collect();
                    p.inflight
                        .remove_many(left.iter().map(|d| (d.lane.as_str(), d.stream_id.as_str())));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A batch that cannot run (the completer is gone, so no room can be kept for its
    /// completions) stops holding its messages: before, they stayed in the held table, whose
    /// leases were refreshed until the process ended.
    #[tokio::test]
    async fn a_batch_that_cannot_run_lets_its_messages_go() {
        let broker = crate::local::in_memory_broker(crate::Registry::default());
        let executor = Executor::new(
            Arc::new(crate::Registry::default()),
            broker.consumer("test"),
            Vec::new(),
            Duration::from_secs(1),
        );
        let (writes, to_write) = mpsc::channel::<Write>(4);
        drop(to_write);
        let executions = Executions {
            executor: Arc::new(executor),
            permits: Arc::new(Semaphore::new(4)),
            writes,
            tracker: TaskTracker::new(),
            inflight: Arc::new(InFlight::default()),
            order: Arc::new(BatchOrder::default()),
        };
        let slots = Arc::new(Semaphore::new(4));
        let taken = vec![
            slots.clone().acquire_owned().await.unwrap(),
            slots.clone().acquire_owned().await.unwrap(),
        ];
        let deliveries: Vec<Delivery> = ["1-1", "1-2", "1-3"]
            .into_iter()
            .map(|id| Delivery {
                lane: "q".into(),
                stream_id: id.into(),
                payload: None,
                deliveries: 1,
            })
            .collect();
        executions.spawn_batch(slots.clone(), taken, deliveries, false);
        assert_eq!(executions.inflight.len(), 3);
        executions.tracker.close();
        executions.tracker.wait().await;
        assert!(executions.inflight.is_empty());
        // Its slots are given back.
        assert_eq!(slots.available_permits(), 4);
    }
}
