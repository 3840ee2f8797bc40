//! Schedules kept in Redis: create, read, update, delete, pause, resume, trigger.

use kiq_broker::{Broker, BrokerError, RawDispatch};

use crate::def::{ScheduleDef, ScheduleStatus};
use crate::error::SchedulerError;

/// `last_tick_ms`, `last_fire_ms`, `next_fire_ms` of a schedule's state hash.
type StateFields = (Option<u64>, Option<u64>, Option<u64>);

/// Key names of the scheduler (all under the broker's prefix).
pub(crate) struct SchedKeys {
    prefix: String,
}

impl SchedKeys {
    pub(crate) fn new(broker: &Broker) -> Self {
        Self {
            prefix: broker.keys().prefix().to_string(),
        }
    }
    pub(crate) fn defs(&self) -> String {
        format!("{}:schedules", self.prefix)
    }
    pub(crate) fn version(&self) -> String {
        format!("{}:schedules:version", self.prefix)
    }
    pub(crate) fn state(&self, id: &str) -> String {
        format!("{}:schedule:{id}:state", self.prefix)
    }
    pub(crate) fn fires(&self, id: &str) -> String {
        format!("{}:schedule:{id}:fires", self.prefix)
    }
    pub(crate) fn fired(&self, fire_id: &str) -> String {
        format!("{}:scheduler:fired:{fire_id}", self.prefix)
    }
    pub(crate) fn lease(&self) -> String {
        format!("{}:scheduler:lease", self.prefix)
    }
    pub(crate) fn fence(&self) -> String {
        format!("{}:scheduler:fence", self.prefix)
    }
}

/// The schedules stored in Redis. Changes take effect at the active scheduler's next pass
/// (it watches a version counter), without restarting anything.
#[derive(Clone)]
pub struct Schedules {
    broker: Broker,
}

impl Schedules {
    /// The schedules of `broker`'s Redis and prefix.
    pub fn new(broker: &Broker) -> Self {
        Self {
            broker: broker.clone(),
        }
    }

    fn keys(&self) -> SchedKeys {
        SchedKeys::new(&self.broker)
    }

    /// Creates or replaces a schedule, after validating it.
    pub async fn put(&self, mut def: ScheduleDef) -> Result<(), SchedulerError> {
        def.validate()?;
        if def.created_at_ms == 0 {
            def.created_at_ms = kiq_broker::envelope::now_ms();
        }
        let json =
            serde_json::to_string(&def).map_err(|e| SchedulerError::Invalid(e.to_string()))?;
        let k = self.keys();
        let mut pipe = kiq_broker::redis::pipe();
        pipe.cmd("HSET")
            .arg(k.defs())
            .arg(&def.id)
            .arg(json)
            .ignore();
        pipe.cmd("INCR").arg(k.version()).ignore();
        self.broker.pool().query::<(), _>(&pipe).await?;
        Ok(())
    }

    /// One schedule.
    pub async fn get(&self, id: &str) -> Result<Option<ScheduleDef>, SchedulerError> {
        let raw: Option<String> = self
            .broker
            .pool()
            .query(
                kiq_broker::redis::cmd("HGET")
                    .arg(self.keys().defs())
                    .arg(id),
            )
            .await?;
        raw.map(|r| {
            serde_json::from_str(&r)
                .map_err(|e| SchedulerError::Invalid(format!("stored schedule {id}: {e}")))
        })
        .transpose()
    }

    /// Every schedule, by id. A stored entry that does not decode is skipped with a warning.
    pub async fn list(&self) -> Result<Vec<ScheduleDef>, SchedulerError> {
        let raw: Vec<(String, String)> = self
            .broker
            .pool()
            .query(kiq_broker::redis::cmd("HGETALL").arg(self.keys().defs()))
            .await?;
        let mut out: Vec<ScheduleDef> = raw
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "stored schedule does not decode; skipped");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes a schedule and its state; returns whether it existed.
    pub async fn remove(&self, id: &str) -> Result<bool, SchedulerError> {
        let k = self.keys();
        let mut pipe = kiq_broker::redis::pipe();
        pipe.cmd("HDEL").arg(k.defs()).arg(id);
        pipe.cmd("DEL").arg(k.state(id)).arg(k.fires(id)).ignore();
        pipe.cmd("INCR").arg(k.version()).ignore();
        let (n,): (u64,) = self.broker.pool().query(&pipe).await?;
        Ok(n == 1)
    }

    /// Pauses (false) or resumes (true) a schedule; returns whether it exists.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool, SchedulerError> {
        let Some(mut def) = self.get(id).await? else {
            return Ok(false);
        };
        let was_enabled = def.enabled;
        def.enabled = enabled;
        self.put(def).await?;
        if enabled && !was_enabled {
            // Ticks during the pause are not owed: resume from now.
            let now = kiq_broker::envelope::now_ms();
            self.broker
                .pool()
                .query::<(), _>(
                    kiq_broker::redis::cmd("HSET")
                        .arg(self.keys().state(id))
                        .arg("last_tick_ms")
                        .arg(now),
                )
                .await?;
        }
        Ok(true)
    }

    /// The schedule's last and next fire and its recent fires.
    pub async fn status(&self, id: &str) -> Result<ScheduleStatus, SchedulerError> {
        let k = self.keys();
        let mut pipe = kiq_broker::redis::pipe();
        pipe.cmd("HMGET")
            .arg(k.state(id))
            .arg("last_tick_ms")
            .arg("last_fire_ms")
            .arg("next_fire_ms");
        pipe.cmd("LRANGE").arg(k.fires(id)).arg(0).arg(19);
        let ((last_tick, last_fire, next_fire), recent): (StateFields, Vec<String>) =
            self.broker.pool().query(&pipe).await?;
        Ok(ScheduleStatus {
            last_tick_ms: last_tick,
            last_fire_ms: last_fire,
            next_fire_ms: next_fire,
            recent_fires: recent,
        })
    }

    /// Dispatches the schedule's task now, outside its schedule; returns the task id.
    pub async fn trigger(&self, id: &str) -> Result<String, SchedulerError> {
        let def = self
            .get(id)
            .await?
            .ok_or_else(|| SchedulerError::Invalid(format!("no schedule {id:?}")))?;
        let task_id = format!(
            "s:{}:manual:{}",
            def.id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let msg = prepare(&self.broker, &def, &task_id, None)?;
        self.broker
            .enqueue(msg)
            .await
            .map_err(SchedulerError::Dispatch)?;
        let k = self.keys();
        let mut pipe = kiq_broker::redis::pipe();
        pipe.cmd("LPUSH").arg(k.fires(id)).arg(&task_id).ignore();
        pipe.cmd("LTRIM").arg(k.fires(id)).arg(0).arg(19).ignore();
        self.broker.pool().query::<(), _>(&pipe).await?;
        Ok(task_id)
    }
}

/// The message for one fire of `def` with task id `task_id`.
pub(crate) fn prepare(
    broker: &Broker,
    def: &ScheduleDef,
    task_id: &str,
    default_queue: Option<&str>,
) -> Result<kiq_broker::OutgoingMessage, SchedulerError> {
    let args = def.encoded_args().map_err(SchedulerError::Invalid)?;
    let queue = def.queue.as_deref().or(default_queue).unwrap_or("default");
    let retry = def.retries.map(kiq_broker::RetryPolicy::retries);
    broker
        .prepare_raw(RawDispatch {
            task: &def.task,
            queue,
            args,
            task_id: Some(task_id),
            labels: def.labels.clone(),
            retry,
            timeout: def.timeout_secs.map(std::time::Duration::from_secs),
            due_ms: None,
            unique_key: None,
            priority: def.priority.unwrap_or_default(),
        })
        .map_err(SchedulerError::Dispatch)
}

impl From<BrokerError> for SchedulerError {
    fn from(e: BrokerError) -> Self {
        SchedulerError::Broker(e)
    }
}
