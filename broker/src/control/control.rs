//! The scheduler's surface: the lease, the stored schedules, and firing ticks exactly once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::RedisBackend;
use crate::client::broker::Broker;
use crate::client::dispatch::OutgoingMessage;
use crate::error::{BrokerError, DispatchError};
use crate::taskiq::{TaskiqMessage, TaskiqStream};

/// Who holds the scheduler lease now, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The holder's id (`host-pid-random`).
    pub holder: String,
    /// Its fencing token.
    pub token: u64,
    /// Milliseconds left.
    pub ttl_ms: i64,
}

/// A schedule's state as the scheduler keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleState {
    /// The last tick handled (fired or skipped), ms since the epoch.
    pub last_tick_ms: Option<u64>,
    /// When it last fired, ms since the epoch.
    pub last_fire_ms: Option<u64>,
    /// Its next tick, ms since the epoch.
    pub next_fire_ms: Option<u64>,
    /// Its latest fires' task ids, newest first.
    pub recent_fires: Vec<String>,
}

/// One tick of a schedule, as the active scheduler handles it.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    /// The lease value (`<holder> <token>`) the scheduler holds: checked in the same step.
    pub lease: &'a str,
    /// The schedule id.
    pub schedule: &'a str,
    /// The tick, ms since the epoch.
    pub tick_ms: u64,
    /// The tick after it, if any (stored as the schedule's next fire).
    pub next_ms: Option<u64>,
    /// The tick's fire id: the id of the task it sends, the same on every replica.
    pub fire_id: &'a str,
    /// How long the tick's marks are kept (longer than any catch-up window).
    pub retention: Duration,
}

/// What became of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// Decided now (and, for a fire, delivered).
    Decided,
    /// Decided before (by this scheduler or a predecessor): nothing sent now.
    AlreadyDecided,
    /// The lease is not ours: another scheduler is active.
    Deposed,
}

/// A decided tick's message, parked in the outbox until it is delivered.
#[derive(Serialize, Deserialize)]
struct Parked {
    id: String,
    lane: String,
    queue: String,
    task: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pending_record: Vec<u8>,
    due_ms: Option<u64>,
    retention_ms: u64,
    /// For a tick of a Taskiq schedule: the stream and group it goes to (the payload is the
    /// Taskiq message's JSON).
    #[serde(default)]
    taskiq: Option<(String, String)>,
}

/// The scheduler's primitives over one broker: obtained with [`Broker::control`]. Redis only.
#[derive(Clone, Debug)]
pub struct Control {
    broker: Broker,
}

impl Control {
    pub(crate) fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// The broker controlled.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    fn redis(&self) -> Result<&RedisBackend, BrokerError> {
        self.broker.backend().redis("the scheduler")
    }

    /// Takes or renews the lease for `holder`; its fencing token, or `None` if another
    /// holds it.
    pub async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, BrokerError> {
        self.redis()?.acquire_lease(holder, ttl).await
    }

    /// Gives the lease up if `holder` still has it with `token`.
    pub async fn release_lease(&self, holder: &str, token: u64) -> Result<(), BrokerError> {
        self.redis()?.release_lease(holder, token).await
    }

    /// The current lease, if any.
    pub async fn lease(&self) -> Result<Option<LeaseInfo>, BrokerError> {
        self.redis()?.lease().await
    }

    /// Stores schedule `id`'s definition (JSON) and bumps the schedules' version.
    pub async fn put_schedule(&self, id: &str, json: &str) -> Result<(), BrokerError> {
        self.redis()?.put_schedule(id, json).await
    }

    /// Schedule `id`'s stored definition.
    pub async fn schedule(&self, id: &str) -> Result<Option<String>, BrokerError> {
        self.redis()?.schedule(id).await
    }

    /// Every stored definition, as (id, JSON).
    pub async fn schedules(&self) -> Result<Vec<(String, String)>, BrokerError> {
        self.redis()?.schedules().await
    }

    /// Deletes schedule `id` with its state; returns whether it existed.
    pub async fn remove_schedule(&self, id: &str) -> Result<bool, BrokerError> {
        self.redis()?.remove_schedule(id).await
    }

    /// The schedules' version: it changes whenever a schedule does.
    pub async fn schedules_version(&self) -> Result<i64, BrokerError> {
        self.redis()?.schedules_version().await
    }

    /// Schedule `id`'s state and recent fires.
    pub async fn schedule_state(&self, id: &str) -> Result<ScheduleState, BrokerError> {
        self.redis()?.schedule_state(id).await
    }

    /// The last tick of schedule `id` that was handled.
    pub async fn last_tick(&self, id: &str) -> Result<Option<u64>, BrokerError> {
        self.redis()?.last_tick(id).await
    }

    /// Sets the last handled tick of schedule `id` (a resumed schedule owes nothing before).
    pub async fn set_last_tick(&self, id: &str, tick_ms: u64) -> Result<(), BrokerError> {
        self.redis()?.set_last_tick(id, tick_ms).await
    }

    /// Notes `task_id` among schedule `id`'s recent fires (a manual trigger).
    pub async fn note_fire(&self, id: &str, task_id: &str) -> Result<(), BrokerError> {
        self.redis()?.note_fire(id, task_id).await
    }

    /// Fires `tick` with `msg` (whose task id is the tick's fire id): decides it under the
    /// lease in one step (marks it, advances the schedule, parks the message), then delivers
    /// it through the broker's idempotent enqueue. A tick is sent at most once whatever
    /// happens: a crash between the two steps leaves the message parked, and the next active
    /// scheduler delivers it ([`Control::deliver_parked`]).
    pub async fn fire(
        &self,
        tick: &Tick<'_>,
        msg: &OutgoingMessage,
    ) -> Result<TickOutcome, DispatchError> {
        let err = |error| DispatchError::Broker {
            task: msg.task.clone(),
            id: Some(msg.id.clone()),
            error,
        };
        let parked = Parked {
            id: msg.id.clone(),
            lane: msg.lane.clone(),
            queue: msg.queue.clone(),
            task: msg.task.clone(),
            payload: msg.payload.clone(),
            pending_record: msg.pending_record.to_vec(),
            due_ms: msg.due_ms,
            retention_ms: tick.retention.as_millis() as u64,
            taskiq: None,
        };
        let parked = crate::codec::encode(&parked).map_err(|e| err(e.into()))?;
        let r = self.redis().map_err(err)?;
        let decision = r.decide(tick, &parked).await.map_err(err)?;
        if decision == TickOutcome::Decided {
            self.broker.enqueue_once(msg, tick.retention).await?;
            r.clear_outbox(tick.fire_id).await.map_err(err)?;
        }
        Ok(decision)
    }

    /// Fires `tick` of a Taskiq schedule: as [`Control::fire`], but the decided tick is
    /// delivered to the Taskiq stream `stream`, once per fire id (`message`'s task id), as
    /// `taskiq scheduler` would send it.
    pub async fn fire_taskiq(
        &self,
        tick: &Tick<'_>,
        stream: &TaskiqStream,
        message: &TaskiqMessage,
    ) -> Result<TickOutcome, DispatchError> {
        let err = |error| DispatchError::Broker {
            task: message.task_name.clone(),
            id: Some(message.task_id.clone()),
            error,
        };
        let data = message.to_json();
        let parked = Parked {
            id: message.task_id.clone(),
            lane: String::new(),
            queue: String::new(),
            task: message.task_name.clone(),
            payload: data.clone(),
            pending_record: Vec::new(),
            due_ms: None,
            retention_ms: tick.retention.as_millis() as u64,
            taskiq: Some((stream.stream.clone(), stream.group.clone())),
        };
        let parked = crate::codec::encode(&parked).map_err(|e| err(e.into()))?;
        let r = self.redis().map_err(err)?;
        let decision = r.decide(tick, &parked).await.map_err(err)?;
        if decision == TickOutcome::Decided {
            r.taskiq_send_once(stream, &message.task_id, &data, tick.retention)
                .await
                .map_err(err)?;
            r.clear_outbox(tick.fire_id).await.map_err(err)?;
        }
        Ok(decision)
    }

    /// The schedules a Python `ListRedisScheduleSource(prefix=prefix)` keeps, as `(schedule
    /// id, stored pickle)`: every cron and interval schedule, and the one-shot schedules due in
    /// the minutes named by `time_buckets` (`YYYY-MM-DDTHH:MM`, UTC). Read only.
    pub async fn taskiq_schedules(
        &self,
        prefix: &str,
        time_buckets: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, BrokerError> {
        self.redis()?.taskiq_schedules(prefix, time_buckets).await
    }

    /// When the scheduler first saw each of the Taskiq schedules `ids` (kiq schedule ids);
    /// those seen now for the first time are recorded as `now_ms`. Schedules not among `ids`
    /// are forgotten.
    pub async fn taskiq_first_seen(
        &self,
        ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<u64>, BrokerError> {
        self.redis()?.taskiq_first_seen(ids, now_ms).await
    }

    /// Marks `tick` handled without firing it (a skipped misfire), under the lease.
    pub async fn skip(&self, tick: &Tick<'_>) -> Result<TickOutcome, BrokerError> {
        self.redis()?.skip(tick).await
    }

    /// Delivers every decided tick still parked (a predecessor stopped between deciding and
    /// delivering, or a delivery failed); returns how many were enqueued now (the others had
    /// been already). A tick that cannot be delivered now stays parked for the next call and
    /// does not hold up the others; the first such error is returned after trying them all.
    pub async fn deliver_parked(&self) -> Result<usize, BrokerError> {
        let r = self.redis()?;
        let mut sent = 0;
        let mut first_error = None;
        for (fire_id, bytes) in r.outbox().await? {
            let Ok(p) = crate::codec::decode::<Parked>(&bytes) else {
                tracing::error!(%fire_id, "an undecodable parked tick was dropped");
                r.clear_outbox(&fire_id).await?;
                continue;
            };
            let ttl = Duration::from_millis(p.retention_ms.max(1));
            // A Taskiq tick goes to its stream; a kiq tick through the idempotent enqueue.
            let delivered = match &p.taskiq {
                Some((stream, group)) => {
                    let s = TaskiqStream::new(stream.as_str()).group(group.as_str());
                    r.taskiq_send_once(&s, &p.id, &p.payload, ttl)
                        .await
                        .map_err(|error| DispatchError::Broker {
                            task: p.task.clone(),
                            id: Some(p.id.clone()),
                            error,
                        })
                }
                None => {
                    let msg = OutgoingMessage {
                        id: p.id,
                        queue: p.queue,
                        lane: p.lane,
                        task: p.task,
                        payload: p.payload,
                        pending_record: std::sync::Arc::new(p.pending_record),
                        due_ms: p.due_ms,
                        span: Default::default(),
                    };
                    self.broker.enqueue_once(&msg, ttl).await
                }
            };
            match delivered {
                Ok(enqueued) => {
                    sent += usize::from(enqueued);
                    r.clear_outbox(&fire_id).await?;
                }
                Err(e) => {
                    tracing::warn!(%fire_id, error = %e, "cannot deliver a parked tick; will retry");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(sent),
            Some(DispatchError::Broker { error, .. }) => Err(error),
            Some(e) => Err(BrokerError::Config(e.to_string())),
        }
    }
}
