//! The scheduler process: stand by, take the lease, fire due ticks exactly once.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiq_broker::envelope::now_ms;
use kiq_broker::keys::DATA_FIELD;
use kiq_broker::Broker;
use tokio_util::sync::CancellationToken;

use crate::def::{fire_id, Misfire, ScheduleDef};
use crate::error::SchedulerError;
use crate::expr::ScheduleExpr;
use crate::lease;
use crate::store::{prepare, SchedKeys, Schedules};

/// Checks the lease and the tick's fired mark, then enqueues the task and advances the
/// schedule's state, all in one atomic step: a tick fires at most once, and only under the
/// current lease.
const FIRE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local fresh = redis.call('SET', KEYS[2], ARGV[7], 'NX', 'PX', ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[5], 'last_tick_ms') or '0')
if tonumber(ARGV[6]) > last then
  redis.call('HSET', KEYS[5], 'last_tick_ms', ARGV[6], 'next_fire_ms', ARGV[11])
end
if not fresh then return 0 end
if ARGV[8] == '1' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]) end
redis.call('XADD', KEYS[4], '*', ARGV[9], ARGV[5])
redis.call('HSET', KEYS[5], 'last_fire_ms', ARGV[10])
redis.call('LPUSH', KEYS[6], ARGV[7])
redis.call('LTRIM', KEYS[6], 0, 19)
return 1
"#;

/// Marks a tick handled without firing it (skipped misfires), under the lease.
const SKIP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_tick_ms') or '0')
if tonumber(ARGV[2]) > last then
  redis.call('HSET', KEYS[2], 'last_tick_ms', ARGV[2], 'next_fire_ms', ARGV[3])
end
return 1
"#;

/// How a scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This process's id in the lease (default `host-pid-random`).
    pub holder: String,
    /// Lease time to live (default 10 s): a stand-by takes over at most this long after the
    /// active scheduler dies or is cut off.
    pub lease_ttl: Duration,
    /// Missed ticks younger than this are fired after a takeover (default 1 h); older ones are
    /// skipped.
    pub catch_up: Duration,
    /// Schedules declared in code (`#[task(schedule = ..)]`); stored in Redis at start so they
    /// can be paused like the others.
    pub declared: Vec<ScheduleDef>,
    /// Default queue per task name (from the linked tasks).
    pub task_queues: HashMap<String, String>,
}

impl SchedulerConfig {
    /// Defaults, with a fresh holder id.
    pub fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        Self {
            holder: format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            lease_ttl: Duration::from_secs(10),
            catch_up: Duration::from_secs(3600),
            declared: Vec::new(),
            task_queues: HashMap::new(),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What a scheduler did, reported when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedulerReport {
    /// Ticks this process fired.
    pub fired: u64,
    /// Times it became the active scheduler.
    pub terms: u64,
}

/// A scheduler process (any number may run; one is active).
pub struct Scheduler {
    broker: Broker,
    config: SchedulerConfig,
}

struct Loaded {
    def: ScheduleDef,
    expr: ScheduleExpr,
}

impl Scheduler {
    /// A scheduler over `broker`'s Redis.
    pub fn new(broker: Broker, config: SchedulerConfig) -> Self {
        Self { broker, config }
    }

    /// Runs until `shutdown`: stands by until it holds the lease, then fires due ticks.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SchedulerReport, SchedulerError> {
        let store = Schedules::new(&self.broker);
        for mut d in self.config.declared.clone() {
            // Keep operators' pause/resume across restarts and deploys.
            if let Ok(Some(stored)) = store.get(&d.id).await {
                d.enabled = stored.enabled;
                d.created_at_ms = stored.created_at_ms;
            }
            store.put(d).await?;
        }
        let mut report = SchedulerReport::default();
        let renew_every = (self.config.lease_ttl / 3).max(Duration::from_millis(100));
        let mut token: Option<u64> = None;
        let mut renewed_at = tokio::time::Instant::now();
        let mut schedules: Vec<Loaded> = Vec::new();
        let mut version: Option<i64> = None;
        tracing::info!(holder = %self.config.holder, "scheduler started; standing by for the lease");
        while !shutdown.is_cancelled() {
            // Hold (or try to take) the lease.
            if token.is_none() || renewed_at.elapsed() >= renew_every {
                match lease::acquire(&self.broker, &self.config.holder, self.config.lease_ttl).await
                {
                    Ok(Some(t)) => {
                        if token != Some(t) {
                            tracing::info!(token = t, "this scheduler is now active");
                            report.terms += 1;
                            version = None;
                        }
                        token = Some(t);
                        renewed_at = tokio::time::Instant::now();
                    }
                    Ok(None) => {
                        if token.take().is_some() {
                            tracing::warn!("lease lost to another scheduler; standing by");
                        }
                    }
                    Err(e) => {
                        // Past the TTL we may already be deposed: stop emitting at once.
                        if token.is_some() && renewed_at.elapsed() >= self.config.lease_ttl {
                            tracing::warn!(error = %e, "cannot renew the lease; standing by");
                            token = None;
                        }
                    }
                }
            }
            let Some(t) = token else {
                sleep_or(renew_every, &shutdown).await;
                continue;
            };
            // Reload schedules when they changed.
            let v: i64 = self
                .broker
                .pool()
                .query(kiq_broker::redis::cmd("GET").arg(SchedKeys::new(&self.broker).version()))
                .await
                .map(|v: Option<i64>| v.unwrap_or(0))
                .unwrap_or(-1);
            if version != Some(v) {
                schedules = load(&store).await;
                version = Some(v);
            }
            let lease_value = format!("{} {}", self.config.holder, t);
            let mut next_wake = now_ms() + 250;
            for s in &schedules {
                match self.tick(s, &lease_value).await {
                    Ok((fired, next)) => {
                        report.fired += fired;
                        if let Some(n) = next {
                            next_wake = next_wake.min(n);
                        }
                    }
                    Err(Deposed) => {
                        tracing::warn!("deposed: another scheduler holds the lease; standing by");
                        token = None;
                        break;
                    }
                }
            }
            let wait = Duration::from_millis(next_wake.saturating_sub(now_ms()).clamp(5, 250));
            sleep_or(wait, &shutdown).await;
        }
        if let Some(t) = token {
            let _ = lease::release(&self.broker, &self.config.holder, t).await;
        }
        Ok(report)
    }

    /// Fires `s`'s due ticks; returns how many fired and when its next tick is.
    async fn tick(&self, s: &Loaded, lease_value: &str) -> Result<(u64, Option<u64>), Deposed> {
        if !s.def.enabled {
            return Ok((0, None));
        }
        let keys = SchedKeys::new(&self.broker);
        let now = now_ms();
        let last: Option<u64> = self
            .broker
            .pool()
            .query(
                kiq_broker::redis::cmd("HGET")
                    .arg(keys.state(&s.def.id))
                    .arg("last_tick_ms"),
            )
            .await
            .unwrap_or(None);
        // Resume after the last handled tick; never before the schedule existed or the window.
        let floor = s
            .def
            .created_at_ms
            .max(now.saturating_sub(self.config.catch_up.as_millis() as u64));
        let from = last.unwrap_or(0).max(floor.saturating_sub(1));
        let mut cursor = to_dt(from);
        let mut fired = 0;
        let mut handled = 0;
        while let Some(tick) = s.expr.next_after(cursor) {
            let tick_ms = tick.timestamp_millis() as u64;
            if tick_ms > now || handled >= 1000 {
                return Ok((fired, Some(tick_ms)));
            }
            let next = s.expr.next_after(tick).map(|n| n.timestamp_millis() as u64);
            let late = now - tick_ms;
            let skip = s.def.misfire == Misfire::Skip && late > 2_000;
            let r = if skip {
                self.skip(s, tick_ms, next, lease_value).await
            } else {
                self.fire(s, tick_ms, next, lease_value).await
            };
            match r {
                Ok(n) => fired += n,
                Err(FireError::Deposed) => return Err(Deposed),
                Err(FireError::Other(e)) => {
                    tracing::warn!(schedule = %s.def.id, error = %e, "cannot fire; will retry");
                    return Ok((fired, Some(now + 500)));
                }
            }
            handled += 1;
            cursor = tick;
        }
        Ok((fired, None))
    }

    async fn fire(
        &self,
        s: &Loaded,
        tick_ms: u64,
        next: Option<u64>,
        lease_value: &str,
    ) -> Result<u64, FireError> {
        let keys = SchedKeys::new(&self.broker);
        let id = fire_id(&s.def.id, tick_ms);
        let default_queue = self.config.task_queues.get(&s.def.task).map(String::as_str);
        let msg = prepare(&self.broker, &s.def, &id, default_queue)
            .map_err(|e| FireError::Other(e.to_string()))?;
        self.broker
            .ensure_group(&msg.lane)
            .await
            .map_err(|e| FireError::Other(e.to_string()))?;
        let cfg = self.broker.config();
        let retention = self.config.catch_up.as_millis() as u64 + 3_600_000;
        let script = kiq_broker::redis::Script::new(FIRE);
        let mut inv = script.key(keys.lease());
        inv.key(keys.fired(&id))
            .key(self.broker.keys().task(&id))
            .key(self.broker.keys().stream(&msg.lane))
            .key(keys.state(&s.def.id))
            .key(keys.fires(&s.def.id))
            .arg(lease_value)
            .arg(retention)
            .arg(msg.pending_record.as_slice())
            .arg(cfg.pending_ttl.as_secs().max(1))
            .arg(&msg.payload)
            .arg(tick_ms)
            .arg(&id)
            .arg(if cfg.track_pending { "1" } else { "0" })
            .arg(DATA_FIELD)
            .arg(now_ms())
            .arg(next.unwrap_or(0));
        let r = self.invoke(&inv).await?;
        match r {
            1 => {
                tracing::info!(schedule = %s.def.id, task = %s.def.task, task_id = %id, "fired");
                Ok(1)
            }
            _ => Ok(0),
        }
    }

    async fn skip(
        &self,
        s: &Loaded,
        tick_ms: u64,
        next: Option<u64>,
        lease_value: &str,
    ) -> Result<u64, FireError> {
        let keys = SchedKeys::new(&self.broker);
        let script = kiq_broker::redis::Script::new(SKIP);
        let mut inv = script.key(keys.lease());
        inv.key(keys.state(&s.def.id))
            .arg(lease_value)
            .arg(tick_ms)
            .arg(next.unwrap_or(0));
        let r = self.invoke(&inv).await?;
        debug_assert_eq!(r, 1);
        tracing::info!(schedule = %s.def.id, tick_ms, "missed tick skipped (misfire = skip)");
        Ok(0)
    }

    /// Runs a lease-checked script: -1 (the lease is not ours) means deposed.
    async fn invoke(
        &self,
        inv: &kiq_broker::redis::ScriptInvocation<'_>,
    ) -> Result<i64, FireError> {
        let r: i64 = self
            .broker
            .pool()
            .invoke(inv)
            .await
            .map_err(|e| FireError::Other(e.to_string()))?;
        if r == -1 {
            return Err(FireError::Deposed);
        }
        Ok(r)
    }
}

struct Deposed;

enum FireError {
    Deposed,
    Other(String),
}

async fn load(store: &Schedules) -> Vec<Loaded> {
    match store.list().await {
        Ok(defs) => defs
            .into_iter()
            .filter_map(|def| match def.validate() {
                Ok(expr) => Some(Loaded { def, expr }),
                Err(e) => {
                    tracing::error!(schedule = %def.id, error = %e, "invalid stored schedule ignored");
                    None
                }
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot load schedules");
            Vec::new()
        }
    }
}

fn to_dt(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

async fn sleep_or(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}
