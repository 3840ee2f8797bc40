//! The in-memory backend: the same [`Broker`] API with no Redis, for users' unit tests.
//!
//! A broker made by [`Broker::in_memory`] keeps task records, progress, groups and
//! uniqueness keys in process memory, and hands every message to a [`LocalRunner`] (the
//! worker crate's, which runs the linked tasks in-process) instead of a stream. Results,
//! retries, delays, chains, groups, cancellation and progress behave as with Redis; what
//! needs other processes (leases, reclaim, dead-letter tooling, the scheduler) does not
//! exist here: those calls return [`BrokerError::Unsupported`](crate::BrokerError). Dead
//! letters are kept in a list ([`Broker::memory_dead_letters`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::client::broker::Broker;
use crate::client::dispatch::OutgoingMessage;
use crate::codec::WireFormat;
use crate::consumer::completion::{DeadLetter, Effect, End, Write};
use crate::error::WaitError;
use crate::model::record::TaskRecord;

/// Runs messages of an in-memory broker (implemented by the worker crate).
pub trait LocalRunner: Send + Sync + 'static {
    /// Runs the message `payload` (read from `lane`) once `due_ms` (ms since the epoch) has
    /// come, then writes its completion through the broker's consumer
    /// ([`crate::Consumer::write`]).
    fn submit(&self, broker: &Broker, lane: String, payload: Vec<u8>, due_ms: Option<u64>);

    /// Fires the cancellation token of task `id` if it is running; returns whether it was.
    fn cancel_running(&self, id: &str) -> bool;
}

#[derive(Default)]
struct State {
    records: HashMap<String, TaskRecord>,
    progress: HashMap<String, Vec<u8>>,
    groups: HashMap<String, Group>,
    unique: HashMap<(String, String), String>,
    cancelled: HashSet<String>,
    dead: Vec<DeadLetter>,
}

struct Group {
    size: usize,
    done: HashSet<u32>,
    callback: Option<(String, Vec<u8>)>,
}

/// The in-memory store behind a broker made by [`Broker::in_memory`].
pub(crate) struct Memory {
    wire: Arc<dyn WireFormat>,
    runner: Arc<dyn LocalRunner>,
    state: Mutex<State>,
    /// Bumped whenever a record changes; waiters watch it.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Memory {
    pub(crate) fn new(runner: Arc<dyn LocalRunner>, wire: Arc<dyn WireFormat>) -> Self {
        Self {
            wire,
            runner,
            state: Mutex::new(State::default()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    pub(crate) fn wire(&self) -> &dyn WireFormat {
        &*self.wire
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters to a test; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn set_record(&self, id: &str, record: TaskRecord) {
        self.state().records.insert(id.to_string(), record);
        self.notify();
    }

    pub(crate) fn enqueue(&self, broker: &Broker, msgs: Vec<OutgoingMessage>) -> Vec<String> {
        let mut ids = Vec::with_capacity(msgs.len());
        for m in msgs {
            if let Ok(r) = self.wire.decode_record(&m.pending_record) {
                self.state().records.insert(m.id.clone(), r);
            }
            ids.push(m.id.clone());
            self.runner.submit(broker, m.lane, m.payload, m.due_ms);
        }
        self.notify();
        ids
    }

    pub(crate) fn enqueue_unique(
        &self,
        broker: &Broker,
        msg: OutgoingMessage,
        key: &str,
    ) -> String {
        {
            let mut st = self.state();
            let k = (msg.queue.clone(), key.to_string());
            if let Some(owner) = st.unique.get(&k) {
                return owner.clone();
            }
            st.unique.insert(k, msg.id.clone());
        }
        self.enqueue(broker, vec![msg]).remove(0)
    }

    pub(crate) fn record(&self, id: &str) -> Option<TaskRecord> {
        self.state().records.get(id).cloned()
    }

    pub(crate) fn set_progress(&self, id: &str, bytes: Vec<u8>) {
        self.state().progress.insert(id.to_string(), bytes);
    }

    pub(crate) fn progress(&self, id: &str) -> Option<Vec<u8>> {
        self.state().progress.get(id).cloned()
    }

    pub(crate) fn register_group(
        &self,
        id: &str,
        size: usize,
        callback: Option<(String, Vec<u8>)>,
    ) {
        self.state().groups.insert(
            id.to_string(),
            Group {
                size,
                done: HashSet::new(),
                callback,
            },
        );
    }

    pub(crate) fn is_cancelled(&self, id: &str) -> bool {
        self.state().cancelled.contains(id)
    }

    /// Marks `id` cancelled; `false` if it had already finished.
    pub(crate) fn cancel(&self, id: &str, cancelled_record: TaskRecord) -> bool {
        {
            let mut st = self.state();
            if st.records.get(id).is_some_and(|r| r.state.is_final()) {
                return false;
            }
            st.cancelled.insert(id.to_string());
            // A queued task's record says cancelled at once; a running one's when it stops.
            st.records.insert(id.to_string(), cancelled_record);
        }
        self.runner.cancel_running(id);
        self.notify();
        true
    }

    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        self.state().dead.clone()
    }

    /// Applies a batch of writes as the Redis backend does. A message that cannot be encoded
    /// (never with kiq's own format) is logged and not sent; the rest of the batch applies.
    pub(crate) fn write(&self, broker: &Broker, batch: &[Write]) {
        let encode = |e: &crate::model::envelope::Envelope| match self.wire.encode_envelope(e) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                tracing::error!(task_id = %e.id, error = %err, "cannot encode a message; not sent");
                None
            }
        };
        let mut sends = Vec::new();
        {
            let mut st = self.state();
            for w in batch {
                let c = match w {
                    Write::State(s) => {
                        st.records.insert(s.id.clone(), s.record.clone());
                        continue;
                    }
                    Write::Completion(c) => c,
                };
                if let Some(task) = &c.task {
                    st.records.insert(task.id.clone(), task.record.clone());
                }
                for effect in &c.effects {
                    match effect {
                        Effect::Send(next) => {
                            if let Some(bytes) = encode(next) {
                                sends.push((next.priority.lane(&next.queue), bytes, None));
                            }
                        }
                        Effect::Finish(s) => {
                            st.records.insert(s.id.clone(), s.record.clone());
                        }
                        Effect::GroupMemberDone(group) => {
                            if let Some(g) = st.groups.get_mut(&group.id) {
                                if g.done.insert(group.index) && g.done.len() >= g.size {
                                    if let Some((lane, payload)) = g.callback.take() {
                                        sends.push((lane, payload, None));
                                    }
                                }
                            }
                        }
                        Effect::ReleaseUnique { queue, key, holder } => {
                            let k = (queue.clone(), key.clone());
                            if st.unique.get(&k) == Some(holder) {
                                st.unique.remove(&k);
                            }
                        }
                        // Values for other frameworks' readers: nobody reads them in memory.
                        Effect::StoreValue { .. } => {}
                    }
                }
                match &c.end {
                    End::Done => {}
                    End::Retry { next, at_ms } => {
                        if let Some(bytes) = encode(next) {
                            sends.push((c.lane.clone(), bytes, Some(*at_ms)));
                        }
                    }
                    End::Defer { payload, at_ms } => {
                        sends.push((c.lane.clone(), payload.clone(), Some(*at_ms)))
                    }
                    End::Dead(letter) => st.dead.push(letter.clone()),
                }
            }
        }
        self.notify();
        for (lane, payload, due) in sends {
            self.runner.submit(broker, lane, payload, due);
        }
    }

    /// Waits for task `id`'s final record.
    pub(crate) async fn wait_record(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<TaskRecord, WaitError> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.record(id) {
                Some(r) if r.state.is_final() => return Ok(r),
                Some(_) => {}
                None => return Err(WaitError::NotFound(id.to_string())),
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(WaitError::Timeout { hint: None }),
            }
        }
    }
}
