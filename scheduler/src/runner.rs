//! The scheduler process: stand by, take the lease, fire due ticks exactly once.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiq_broker::envelope::now_ms;
use kiq_broker::taskiq::{TaskiqMessage, TaskiqStream};
use kiq_broker::{Broker, Control, Tick, TickOutcome};
use tokio_util::sync::CancellationToken;

use crate::def::{fire_id, Misfire, ScheduleDef};
use crate::error::SchedulerError;
use crate::expr::ScheduleExpr;
use crate::store::{prepare, Schedules};

/// How a scheduler runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Also serve the schedules a Python Taskiq app keeps in Redis (read only).
    pub taskiq: Option<crate::taskiq::TaskiqSchedules>,
}

impl SchedulerConfig {
    /// Defaults, with a fresh holder id.
    pub fn new() -> Self {
        let host = kiq_broker::config::hostname();
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
            taskiq: None,
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
    /// For a Taskiq schedule: where its ticks go and the message they send.
    taskiq: Option<(TaskiqStream, TaskiqMessage)>,
}

/// How often Taskiq's schedules are read again (the Python side announces no change).
const TASKIQ_RELOAD: Duration = Duration::from_secs(5);

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
        let control = self.broker.control();
        let mut parked = false;
        let mut taskiq: Vec<Loaded> = Vec::new();
        let mut taskiq_loaded_at: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            // Hold (or try to take) the lease.
            if token.is_none() || renewed_at.elapsed() >= renew_every {
                match control
                    .acquire_lease(&self.config.holder, self.config.lease_ttl)
                    .await
                {
                    Ok(Some(t)) => {
                        if token != Some(t) {
                            tracing::info!(token = t, "this scheduler is now active");
                            report.terms += 1;
                            version = None;
                            // A new term first finishes what a predecessor decided.
                            parked = true;
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
                let _ = shutdown
                    .run_until_cancelled(tokio::time::sleep(renew_every))
                    .await;
                continue;
            };
            if parked {
                match control.deliver_parked().await {
                    Ok(n) => {
                        parked = false;
                        if n > 0 {
                            tracing::info!(
                                delivered = n,
                                "delivered parked ticks (decided, then left undelivered)"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot deliver parked ticks; will retry"),
                }
            }
            // Reload schedules when they changed.
            let v: i64 = control.schedules_version().await.unwrap_or(-1);
            if version != Some(v) {
                schedules = load(&store).await;
                version = Some(v);
            }
            if let Some(source) = &self.config.taskiq {
                if taskiq_loaded_at.is_none_or(|at| at.elapsed() >= TASKIQ_RELOAD) {
                    taskiq = source
                        .load(&control, self.config.catch_up)
                        .await
                        .into_iter()
                        .filter_map(|s| match s.def.validate() {
                            Ok(expr) => Some(Loaded {
                                def: s.def,
                                expr,
                                taskiq: Some((s.stream, s.message)),
                            }),
                            Err(_) => None,
                        })
                        .collect();
                    taskiq_loaded_at = Some(tokio::time::Instant::now());
                }
            }
            let lease_value = format!("{} {}", self.config.holder, t);
            let mut next_wake = now_ms() + 250;
            for s in schedules.iter().chain(&taskiq) {
                match self.tick(&control, s, &lease_value).await {
                    Ok(pass) => {
                        report.fired += pass.fired;
                        if let Some(n) = pass.next_ms {
                            next_wake = next_wake.min(n);
                        }
                        parked |= pass.maybe_parked;
                    }
                    Err(Deposed) => {
                        tracing::warn!("deposed: another scheduler holds the lease; standing by");
                        token = None;
                        break;
                    }
                }
            }
            let wait = Duration::from_millis(next_wake.saturating_sub(now_ms()).clamp(5, 250));
            let _ = shutdown.run_until_cancelled(tokio::time::sleep(wait)).await;
        }
        if let Some(t) = token {
            let _ = control.release_lease(&self.config.holder, t).await;
        }
        Ok(report)
    }

    /// Fires `s`'s due ticks; says how many fired and when to look again.
    async fn tick(
        &self,
        control: &Control,
        s: &Loaded,
        lease_value: &str,
    ) -> Result<Pass, Deposed> {
        if !s.def.enabled {
            return Ok(Pass::default());
        }
        let now = now_ms();
        let last: Option<u64> = control.last_tick(&s.def.id).await.unwrap_or(None);
        // Resume after the last handled tick; never before the schedule existed or the window.
        // (A Taskiq schedule's creation time is when this process first saw it: once a tick
        // of it was handled, by any replica, its last tick says where to resume.)
        let created = match (&s.taskiq, last) {
            (Some(_), Some(_)) => 0,
            _ => s.def.created_at_ms,
        };
        let floor = created.max(now.saturating_sub(self.config.catch_up.as_millis() as u64));
        let from = last.unwrap_or(0).max(floor.saturating_sub(1));
        let mut cursor = to_dt(from);
        let mut fired = 0;
        let mut handled = 0;
        // Marks outlive the catch-up window, so a tick is never decided twice.
        let retention = self.config.catch_up + Duration::from_secs(3600);
        let default_queue = self.config.task_queues.get(&s.def.task).map(String::as_str);
        while let Some(tick) = s.expr.next_after(cursor) {
            let tick_ms = tick.timestamp_millis() as u64;
            if tick_ms > now || handled >= 1000 {
                return Ok(Pass {
                    fired,
                    next_ms: Some(tick_ms),
                    maybe_parked: false,
                });
            }
            let next = s.expr.next_after(tick).map(|n| n.timestamp_millis() as u64);
            let late = now - tick_ms;
            let skip = s.def.misfire == Misfire::Skip && late > 2_000;
            let id = fire_id(&s.def.id, tick_ms);
            let t = Tick {
                lease: lease_value,
                schedule: &s.def.id,
                tick_ms,
                next_ms: next,
                fire_id: &id,
                retention,
            };
            // Whether a failure may come after the tick was decided (then its message is
            // parked, and delivered from the outbox on the next pass).
            let mut after_decision = false;
            let r = if skip {
                control.skip(&t).await.map_err(|e| e.to_string())
            } else if let Some((stream, message)) = &s.taskiq {
                after_decision = true;
                let message = TaskiqMessage {
                    task_id: id.clone(),
                    ..message.clone()
                };
                control
                    .fire_taskiq(&t, stream, &message)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                match prepare(&self.broker, &s.def, &id, default_queue) {
                    Ok(msg) => {
                        after_decision = true;
                        control.fire(&t, &msg).await.map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            };
            match r {
                Ok(TickOutcome::Deposed) => return Err(Deposed),
                Ok(TickOutcome::Decided) if skip => {
                    tracing::info!(schedule = %s.def.id, tick_ms, "missed tick skipped (misfire = skip)");
                }
                Ok(TickOutcome::Decided) => {
                    tracing::info!(schedule = %s.def.id, task = %s.def.task, task_id = %id, "fired");
                    fired += 1;
                }
                Ok(TickOutcome::AlreadyDecided) => {}
                Err(e) => {
                    tracing::warn!(schedule = %s.def.id, error = %e, "cannot fire; will retry");
                    return Ok(Pass {
                        fired,
                        next_ms: Some(now + 500),
                        maybe_parked: after_decision,
                    });
                }
            }
            handled += 1;
            cursor = tick;
        }
        Ok(Pass {
            fired,
            next_ms: None,
            maybe_parked: false,
        })
    }
}

/// What one pass over a schedule did.
#[derive(Debug, Default)]
struct Pass {
    /// Ticks fired.
    fired: u64,
    /// When to look again (its next tick, or a retry after a failure).
    next_ms: Option<u64>,
    /// A fire failed after its tick may have been decided: deliver the parked ticks.
    maybe_parked: bool,
}

/// Another scheduler holds the lease.
struct Deposed;

async fn load(store: &Schedules) -> Vec<Loaded> {
    match store.list().await {
        Ok(defs) => defs
            .into_iter()
            .filter_map(|def| match def.validate() {
                Ok(expr) => Some(Loaded {
                    def,
                    expr,
                    taskiq: None,
                }),
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
