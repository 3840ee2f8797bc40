//! Waking result waiters without polling.
//!
//! A worker publishes on `<prefix>:done:<id>` right after storing a task's record, and the
//! message carries the record itself when it is small. Each process keeps **one** subscriber
//! connection, shared by all its waiters: the first waiter of an id subscribes to its
//! channel, the last one to leave unsubscribes, and subscriptions are sent in batches.
//!
//! No completion is missed: whenever a SUBSCRIBE is confirmed (or re-sent after a reconnect),
//! the waiters of those ids are told to re-read the record, which covers a result stored
//! before the subscription took effect.
//!
//! On a Redis Cluster the done channel lives in the task's slot and is sharded (SPUBLISH /
//! SSUBSCRIBE, Redis 7): a completion travels only to the node that owns the task, not to
//! every node. The listener then holds one RESP3 cluster connection; redis-rs re-sends its
//! subscriptions after a reconnect or a slot move, and each confirmation makes the waiters
//! re-read. A subscription the server drops itself (its slot migrated: a `sunsubscribe` push)
//! is not re-sent by redis-rs, so the listener subscribes again and the waiters re-read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};

use crate::error::{BrokerError, WaitError};
use crate::keys::Keys;
use crate::model::record::{TaskRecord, TaskState};
use tokio::time::Instant;

use super::connection::Target;
use super::RedisBackend;

/// What a waiter is told.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// Nothing yet.
    Idle,
    /// Re-read the record (a subscription was confirmed, or the connection came back).
    Recheck,
    /// The task finished; the encoded record if it was published inline.
    Done(Option<Arc<Vec<u8>>>),
}

struct Watch {
    tx: watch::Sender<Event>,
    waiters: usize,
}

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

type Watches = Arc<Mutex<HashMap<String, Watch>>>;

/// The shared subscriber of one broker.
pub(crate) struct Waiters {
    target: Target,
    config: crate::config::BrokerConfig,
    keys: Keys,
    watches: Watches,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

/// A registration for one task id: unsubscribes when dropped.
pub(crate) struct Registration {
    pub rx: watch::Receiver<Event>,
    /// True when another waiter already had the channel subscribed (no Recheck will come).
    pub already_subscribed: bool,
    id: String,
    watches: Watches,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Ok(mut w) = self.watches.lock() else {
            return;
        };
        let gone = match w.get_mut(&self.id) {
            Some(entry) => {
                entry.waiters = entry.waiters.saturating_sub(1);
                entry.waiters == 0
            }
            None => false,
        };
        if gone {
            w.remove(&self.id);
            if let Some(c) = &self.commands {
                let _ = c.send(Command::Unsubscribe(self.id.clone()));
            }
        }
    }
}

impl Waiters {
    pub(crate) fn new(target: Target, keys: Keys, config: crate::config::BrokerConfig) -> Self {
        Self {
            target,
            config,
            keys,
            watches: Arc::new(Mutex::new(HashMap::new())),
            commands: Mutex::new(None),
        }
    }

    /// Registers interest in `id`, starting the listener on first use.
    pub(crate) fn register(&self, id: &str) -> Registration {
        let commands = self.listener();
        let mut w = self
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (rx, already_subscribed) = match w.get_mut(id) {
            Some(entry) => {
                entry.waiters += 1;
                (entry.tx.subscribe(), true)
            }
            None => {
                let (tx, rx) = watch::channel(Event::Idle);
                w.insert(id.to_string(), Watch { tx, waiters: 1 });
                if let Some(c) = &commands {
                    let _ = c.send(Command::Subscribe(id.to_string()));
                }
                (rx, false)
            }
        };
        Registration {
            rx,
            already_subscribed,
            id: id.to_string(),
            watches: self.watches.clone(),
            commands,
        }
    }

    /// The command channel of the listener task, spawning it if it is not running.
    fn listener(&self) -> Option<mpsc::UnboundedSender<Command>> {
        let mut slot = self.commands.lock().ok()?;
        if let Some(tx) = slot.as_ref() {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Target::Cluster { seeds, .. } = &self.target {
            tokio::spawn(listen_sharded(
                seeds.clone(),
                self.config.clone(),
                self.keys.clone(),
                Arc::downgrade(&self.watches),
                rx,
            ));
        } else {
            tokio::spawn(listen(
                self.target.clone(),
                self.config.described_url(),
                self.keys.clone(),
                Arc::downgrade(&self.watches),
                rx,
            ));
        }
        *slot = Some(tx.clone());
        Some(tx)
    }
}

impl Drop for Waiters {
    fn drop(&mut self) {
        // Closing the command channel stops the listener task.
        if let Ok(mut slot) = self.commands.lock() {
            slot.take();
        }
    }
}

fn notify(watches: &Watches, ids: &[String], event: &Event) {
    if let Ok(w) = watches.lock() {
        for id in ids {
            if let Some(entry) = w.get(id) {
                entry.tx.send_replace(event.clone());
            }
        }
    }
}

/// The listener task: owns the subscriber connection, reconnects with backoff.
async fn listen(
    target: Target,
    url: String,
    keys: Keys,
    watches: std::sync::Weak<Mutex<HashMap<String, Watch>>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut was_down = false;
    loop {
        let Some(watches) = watches.upgrade() else {
            return;
        };
        // On Sentinel, the primary named now.
        let pubsub = match target.node_client(0).await {
            Ok(client) => client.get_async_pubsub().await.map_err(BrokerError::redis),
            Err(e) => Err(e),
        }
        .map_err(|e| e.at(&url));
        let pubsub: redis::aio::PubSub = match pubsub {
            Ok(p) => p,
            Err(e) => {
                if !was_down {
                    tracing::warn!(error = %e, "result listener cannot reach Redis; retrying");
                    was_down = true;
                }
                drop(watches);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // (Re)subscribe to everything currently watched, then have those waiters re-read.
        let current: Vec<String> = watches
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default();
        if !current.is_empty() {
            let channels: Vec<String> = current.iter().map(|id| keys.done_channel(id)).collect();
            if sink.subscribe(channels).await.is_err() {
                continue;
            }
            notify(&watches, &current, &Event::Recheck);
        }
        if was_down {
            tracing::info!("result listener reconnected to Redis");
        }
        backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let Some((subs, unsubs)) = take_commands(&watches, cmd, &mut commands) else { return };
                    if !unsubs.is_empty() {
                        let channels: Vec<String> = unsubs.iter().map(|id| keys.done_channel(id)).collect();
                        if sink.unsubscribe(channels).await.is_err() {
                            break;
                        }
                    }
                    if !subs.is_empty() {
                        let channels: Vec<String> = subs.iter().map(|id| keys.done_channel(id)).collect();
                        if sink.subscribe(channels).await.is_err() {
                            break;
                        }
                        notify(&watches, &subs, &Event::Recheck);
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let channel = msg.get_channel_name();
                    let Some(id) = keys.done_channel_id(channel) else { continue };
                    let payload = msg.get_payload_bytes();
                    let event = if payload.is_empty() {
                        Event::Done(None)
                    } else {
                        Event::Done(Some(Arc::new(payload.to_vec())))
                    };
                    notify(&watches, &[id.to_string()], &event);
                }
            }
        }
        tracing::warn!("result listener lost its Redis connection; reconnecting");
        was_down = true;
    }
}

/// `first` and every command queued behind it, as the ids to subscribe (still watched) and the
/// ids to drop (no longer watched); `None` if the watches are gone.
fn take_commands(
    watches: &Watches,
    first: Command,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<(Vec<String>, Vec<String>)> {
    let mut batch = vec![first];
    while let Ok(more) = commands.try_recv() {
        batch.push(more);
    }
    let w = watches.lock().ok()?;
    let (mut subs, mut unsubs) = (Vec::new(), Vec::new());
    for c in batch {
        match c {
            Command::Subscribe(id) if w.contains_key(&id) => subs.push(id),
            Command::Unsubscribe(id) if !w.contains_key(&id) => unsubs.push(id),
            _ => {}
        }
    }
    Some((subs, unsubs))
}

/// The first element of a push message's data as text (the channel).
fn push_channel(push: &PushInfo) -> Option<String> {
    match push.data.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The listener on a Redis Cluster: sharded subscriptions over one RESP3 cluster connection.
async fn listen_sharded(
    seeds: Vec<String>,
    config: crate::config::BrokerConfig,
    keys: Keys,
    watches: std::sync::Weak<Mutex<HashMap<String, Watch>>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut was_down = false;
    loop {
        let Some(watches) = watches.upgrade() else {
            return;
        };
        let (push_tx, mut pushes) = mpsc::unbounded_channel();
        let conn = match super::connection::cluster_builder(&seeds, &config)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push_tx)
            .build()
        {
            Ok(client) => client.get_async_connection().await,
            Err(e) => Err(e),
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                if !was_down {
                    tracing::warn!(error = %e, redis = %config.described_url(), "result listener cannot reach the cluster; retrying");
                    was_down = true;
                }
                drop(watches);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Each done channel is in its own task's slot: one SSUBSCRIBE per channel.
        let current: Vec<String> = watches
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default();
        let mut ok = true;
        for id in &current {
            if conn.ssubscribe(keys.done_channel(id)).await.is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            drop(watches);
            tokio::time::sleep(backoff).await;
            continue;
        }
        notify(&watches, &current, &Event::Recheck);
        if was_down {
            tracing::info!("result listener reconnected to the cluster");
        }
        backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let Some((subs, unsubs)) = take_commands(&watches, cmd, &mut commands) else { return };
                    let mut failed = false;
                    for id in &unsubs {
                        failed |= conn.sunsubscribe(keys.done_channel(id)).await.is_err();
                    }
                    for id in &subs {
                        failed |= conn.ssubscribe(keys.done_channel(id)).await.is_err();
                    }
                    // Subscribed (or not: then they read now rather than wait for nothing).
                    notify(&watches, &subs, &Event::Recheck);
                    if failed {
                        break;
                    }
                }
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    let Some(channel) = push_channel(&push) else { continue };
                    let Some(id) = keys.done_channel_id(&channel) else { continue };
                    let id = id.to_string();
                    match push.kind {
                        PushKind::SMessage => {
                            let event = match push.data.get(1) {
                                Some(Value::BulkString(b)) if !b.is_empty() => {
                                    Event::Done(Some(Arc::new(b.clone())))
                                }
                                _ => Event::Done(None),
                            };
                            notify(&watches, &[id], &event);
                        }
                        // (Re)subscribed, by us or by redis-rs after a reconnect or slot move.
                        PushKind::SSubscribe => notify(&watches, &[id], &Event::Recheck),
                        // Dropped by the server (its slot moved): subscribe again, where the
                        // slot is now, if anyone still waits.
                        PushKind::SUnsubscribe => {
                            let watched = watches.lock().map(|w| w.contains_key(&id)).unwrap_or(false);
                            if watched {
                                let _ = conn.ssubscribe(keys.done_channel(&id)).await;
                                notify(&watches, &[id], &Event::Recheck);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        tracing::warn!("result listener lost its cluster connection; reconnecting");
        was_down = true;
    }
}

/// Waits for task `id`'s final record: woken by its completion notice, never polling.
pub(crate) async fn wait_record(
    backend: &RedisBackend,
    id: &str,
    timeout: Duration,
) -> Result<TaskRecord, WaitError> {
    let deadline = Instant::now() + timeout;
    let mut reg = backend.waiters.register(id);
    let mut last_error: Option<BrokerError> = None;
    // With a fresh subscription, the listener's Recheck (sent once SUBSCRIBE is confirmed)
    // triggers the first read; otherwise read now.
    let mut read_now = reg.already_subscribed;
    // Without pending records, "no record yet" is what a queued task looks like.
    let absent_means_unknown = backend.config.track_pending;
    loop {
        if read_now {
            match backend.record(id).await {
                Ok(Some(r)) if r.state.is_final() => return Ok(r),
                Ok(Some(_)) => last_error = None,
                Ok(None) if absent_means_unknown => {
                    return Err(WaitError::NotFound(id.to_string()))
                }
                Ok(None) => last_error = None,
                Err(e) => last_error = Some(e),
            }
        }
        read_now = true;
        match tokio::time::timeout_at(deadline, reg.rx.changed()).await {
            Err(_) => break,
            Ok(Err(_)) => break,
            Ok(Ok(())) => {
                let event = reg.rx.borrow_and_update().clone();
                match event {
                    Event::Done(Some(bytes)) => {
                        if let Ok(r) = backend.wire.decode_record(&bytes) {
                            if r.state.is_final() {
                                return Ok(r);
                            }
                        }
                    }
                    Event::Done(None) | Event::Recheck | Event::Idle => {}
                }
            }
        }
    }
    // Out of time: one last look tells "still running" from "unknown" from "Redis down".
    match backend.record(id).await {
        Ok(Some(r)) if r.state.is_final() => Ok(r),
        Ok(Some(r)) => Err(WaitError::Timeout {
            hint: unread_queue_hint(backend, &r).await,
        }),
        Ok(None) if absent_means_unknown => Err(WaitError::NotFound(id.to_string())),
        Ok(None) => Err(WaitError::Timeout { hint: None }),
        Err(e) => Err(WaitError::Broker(last_error.unwrap_or(e))),
    }
}

/// Why a task still waiting when its wait ran out may never run: no live worker reads its
/// queue. `None` when some does, when it is running, or when the workers cannot be listed.
async fn unread_queue_hint(backend: &RedisBackend, r: &TaskRecord) -> Option<String> {
    if !matches!(
        r.state,
        TaskState::Pending | TaskState::Scheduled | TaskState::Retrying
    ) {
        return None;
    }
    // Listed without forgetting anyone (that is `taskctl status`'s business).
    let workers = backend.workers(u64::MAX).await.ok()?;
    let now = crate::envelope::now_ms();
    let live: Vec<_> = workers.iter().filter(|w| w.is_live(now)).collect();
    if live.iter().any(|w| w.queues.contains(&r.queue)) {
        return None;
    }
    if live.is_empty() {
        return Some(format!(
            "no worker is running (none has sent a heartbeat in the last {} s); the task waits in queue {:?}",
            crate::consumer::WorkerInfo::LIVE_MS / 1000,
            r.queue
        ));
    }
    let mut read: Vec<&str> = live
        .iter()
        .flat_map(|w| w.queues.iter().map(String::as_str))
        .collect();
    read.sort_unstable();
    read.dedup();
    Some(format!(
        "no live worker reads queue {:?}, where the task waits (live workers read: {})",
        r.queue,
        read.join(", ")
    ))
}
