//! Schedules kept in Redis: create, read, update, delete, pause, resume, trigger.

use kiq_broker::{Broker, BrokerError, Control, RawDispatch};

use crate::def::{ScheduleDef, ScheduleStatus};
use crate::error::SchedulerError;

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

    fn control(&self) -> Control {
        self.broker.control()
    }

    /// Creates or replaces a schedule, after validating it.
    pub async fn put(&self, mut def: ScheduleDef) -> Result<(), SchedulerError> {
        let expr = def.validate()?;
        let stored = self.get(&def.id).await?;
        let now = kiq_broker::envelope::now_ms();
        // Kept by the store, never taken from the caller: a client that sent
        // `created_at_ms: 1` made an `@every 1s` schedule owe every second since 1970.
        def.created_at_ms = stored
            .as_ref()
            .map(|s| s.created_at_ms)
            .filter(|c| *c > 0)
            .unwrap_or(now);
        // A new or changed expression must fire some day: a cron of February 31st, or an
        // `@at` in the past, is a mistake to say now rather than a schedule that never runs.
        let changed = stored
            .as_ref()
            .is_none_or(|s| s.schedule != def.schedule || s.tz != def.tz);
        if changed && expr.next_after(chrono::Utc::now()).is_none() {
            return Err(SchedulerError::Invalid(format!(
                "schedule {:?} never fires from now on (a date that does not exist, or a time \
                 in the past)",
                def.schedule
            )));
        }
        // Enabled again, by whatever call (resume, or a PUT of the whole definition): the
        // ticks of the pause are not owed. The last tick moves first, so that an active
        // scheduler reloading on the new definition never sees the pause as missed ticks.
        if def.enabled && stored.as_ref().is_some_and(|s| !s.enabled) {
            self.control().set_last_tick(&def.id, now).await?;
        }
        let json =
            serde_json::to_string(&def).map_err(|e| SchedulerError::Invalid(e.to_string()))?;
        self.control().put_schedule(&def.id, &json).await?;
        Ok(())
    }

    /// One schedule.
    pub async fn get(&self, id: &str) -> Result<Option<ScheduleDef>, SchedulerError> {
        let raw = self.control().schedule(id).await?;
        raw.map(|r| {
            serde_json::from_str(&r)
                .map_err(|e| SchedulerError::Invalid(format!("stored schedule {id}: {e}")))
        })
        .transpose()
    }

    /// Every schedule, by id. A stored entry that does not decode is skipped with a warning.
    pub async fn list(&self) -> Result<Vec<ScheduleDef>, SchedulerError> {
        let raw = self.control().schedules().await?;
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
        Ok(self.control().remove_schedule(id).await?)
    }

    /// Pauses (false) or resumes (true) a schedule; returns whether it exists.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool, SchedulerError> {
        let Some(mut def) = self.get(id).await? else {
            return Ok(false);
        };
        // `put` resumes from now (the ticks of the pause are not owed).
        def.enabled = enabled;
        self.put(def).await?;
        Ok(true)
    }

    /// The schedule's last and next fire and its recent fires.
    pub async fn status(&self, id: &str) -> Result<ScheduleStatus, SchedulerError> {
        let s = self.control().schedule_state(id).await?;
        Ok(ScheduleStatus {
            last_tick_ms: s.last_tick_ms,
            last_fire_ms: s.last_fire_ms,
            next_fire_ms: s.next_fire_ms,
            recent_fires: s.recent_fires,
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
        self.control().note_fire(id, &task_id).await?;
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
    let args = def
        .encoded_args(broker.codec())
        .map_err(SchedulerError::Invalid)?;
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
