//! `taskctl scheduler` (run one scheduler replica) and `taskctl schedule` (manage schedules).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use kiq_scheduler::{Misfire, ScheduleDef, Scheduler, SchedulerConfig, Schedules};
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    /// Lease time to live: a stand-by replica takes over at most this long after the active one
    /// dies or is cut off from Redis.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "KIQ_LEASE_TTL")]
    lease_ttl: Duration,
    /// Missed ticks younger than this are fired after a takeover; older ones are skipped.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "KIQ_CATCH_UP")]
    catch_up: Duration,
    /// Also serve the schedules a Python Taskiq app keeps with `ListRedisScheduleSource`
    /// under this key prefix (its `prefix`, `schedule` by default). Read only.
    #[arg(long, env = "KIQ_TASKIQ_SCHEDULES")]
    taskiq_schedules: Option<String>,
    /// The Taskiq stream their ticks are sent to (a schedule's `queue_name` label wins).
    #[arg(long, default_value = "taskiq", env = "KIQ_TASKIQ_STREAM")]
    taskiq_stream: String,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Create or replace a schedule.
    Add {
        /// Schedule id.
        id: String,
        /// Task name to run.
        #[arg(long)]
        task: String,
        /// When: 5-field cron (Unix weekdays), 6-field with seconds, @daily, @every 5m, @at <RFC 3339>.
        #[arg(long = "cron", alias = "schedule")]
        schedule: String,
        /// IANA time zone (default UTC).
        #[arg(long)]
        tz: Option<String>,
        /// Arguments as a JSON array.
        #[arg(long, default_value = "[]")]
        args: String,
        /// Queue (default: the task's).
        #[arg(long)]
        queue: Option<String>,
        /// Retries per fired task.
        #[arg(long)]
        retries: Option<u32>,
        /// Priority of each fired task: critical, high, normal or low.
        #[arg(long)]
        priority: Option<kiq_broker::Priority>,
        /// Per-attempt timeout per fired task.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Skip ticks missed while no scheduler ran, instead of firing each once.
        #[arg(long)]
        skip_missed: bool,
        /// Create it paused.
        #[arg(long)]
        disabled: bool,
        /// A description for operators.
        #[arg(long)]
        description: Option<String>,
        /// Save it even though no task of that name is linked into this binary (one that only
        /// other workers know).
        #[arg(long)]
        force: bool,
    },
    /// List schedules with their last and next fire.
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule: definition, last and next fire, recent fire ids.
    Show { id: String },
    /// Delete a schedule.
    Rm { id: String },
    /// Stop a schedule from firing (it stays defined).
    Pause { id: String },
    /// Let a paused schedule fire again.
    Resume { id: String },
    /// Dispatch the schedule's task now, outside its schedule.
    Trigger { id: String },
    /// Show which scheduler holds the lease.
    Leader,
}

pub(crate) async fn run_scheduler(
    global: &GlobalArgs,
    args: SchedulerArgs,
) -> anyhow::Result<ExitCode> {
    let broker = kiq_broker::Broker::lazy(global.broker_config()?)?;
    let mut config = SchedulerConfig::new();
    config.lease_ttl = args.lease_ttl;
    config.catch_up = args.catch_up;
    config.taskiq = args
        .taskiq_schedules
        .as_ref()
        .map(|prefix| kiq_scheduler::TaskiqSchedules {
            prefix: prefix.clone(),
            stream: kiq_broker::taskiq::TaskiqStream::new(args.taskiq_stream.as_str()),
        });
    let mut task_queues = HashMap::new();
    if let Ok(registry) = kiq_worker::Registry::linked() {
        for def in registry.tasks() {
            task_queues.insert(def.name.to_string(), def.queue.to_string());
            if let Some(s) = def.schedule {
                let mut d =
                    ScheduleDef::new(format!("task.{}", sanitize(def.name)), def.name, s.expr);
                d.tz = s.tz.map(str::to_string);
                d.args = serde_json::from_str(s.args_json).map_err(|e| {
                    anyhow::anyhow!("schedule_args of task {} is not JSON: {e}", def.name)
                })?;
                d.description = Some(format!("declared on {} ({})", def.name, def.location));
                d.validate()
                    .map_err(|e| anyhow::anyhow!("task {} ({}): {e}", def.name, def.location))?;
                println!(
                    "declared schedule {}: {} {}",
                    d.id,
                    d.schedule,
                    d.tz.as_deref().unwrap_or("UTC")
                );
                config.declared.push(d);
            }
        }
    }
    config.task_queues = task_queues;
    println!(
        "scheduler {} (lease ttl {}, catch-up {})",
        config.holder,
        humantime::format_duration(config.lease_ttl),
        humantime::format_duration(config.catch_up)
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        kiq_worker::supervisor::termination_signal().await;
        on_signal.cancel();
    });
    let report = Scheduler::new(broker, config).run(shutdown).await?;
    tracing::info!(
        fired = report.fired,
        terms = report.terms,
        "scheduler stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .collect::<String>()
        .replace("..", ".")
        .chars()
        .take(64)
        .collect()
}

pub(crate) async fn run_schedule(
    global: &GlobalArgs,
    args: ScheduleArgs,
) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    let store = Schedules::new(&broker);
    match args.command {
        ScheduleCommand::Add {
            id,
            task,
            schedule,
            tz,
            args,
            queue,
            retries,
            priority,
            timeout,
            skip_missed,
            disabled,
            description,
            force,
        } => {
            let mut d = ScheduleDef::new(id, task, schedule);
            d.tz = tz;
            d.args = serde_json::from_str(&args)
                .map_err(|e| anyhow::anyhow!("--args must be JSON: {e}"))?;
            d.queue = queue;
            d.retries = retries;
            d.priority = priority;
            d.timeout_secs = timeout.map(|t| t.as_secs().max(1));
            d.misfire = if skip_missed {
                Misfire::Skip
            } else {
                Misfire::CatchUp
            };
            d.enabled = !disabled;
            d.description = description;
            let expr = d.validate()?;
            // A task name this binary does not link is most likely a typo: say so, with what
            // it does link (a binary that links no task cannot tell, and does not check).
            if let Ok(registry) = kiq_worker::Registry::linked() {
                let names: Vec<&str> = registry.tasks().iter().map(|t| t.name).collect();
                if !force && !names.is_empty() && !names.contains(&d.task.as_str()) {
                    anyhow::bail!(
                        "no task named {:?} is linked into this binary (it links: {}); \
                         --force saves the schedule anyway",
                        d.task,
                        names.join(", ")
                    );
                }
            }
            let next = expr.next_after(chrono_now());
            store.put(d.clone()).await?;
            println!(
                "schedule {} saved; next fire {}",
                d.id,
                next.map(|n| n.to_rfc3339())
                    .unwrap_or_else(|| "never".into())
            );
        }
        ScheduleCommand::List { json } => {
            let defs = store.list().await?;
            if !json {
                println!(
                    "{:<28} {:<8} {:<22} {:<16} {:<30} {:<25}",
                    "ID", "ENABLED", "SCHEDULE", "TZ", "TASK", "NEXT FIRE (UTC)"
                );
            }
            for d in defs {
                let status = store.status(&d.id).await?;
                let next = d
                    .validate()
                    .ok()
                    .and_then(|e| e.next_after(chrono_now()))
                    .map(|n| n.to_rfc3339());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"schedule": d, "status": status, "next_fire": next})
                    );
                } else {
                    println!(
                        "{:<28} {:<8} {:<22} {:<16} {:<30} {:<25}",
                        d.id,
                        d.enabled,
                        d.schedule,
                        d.tz.as_deref().unwrap_or("UTC"),
                        d.task,
                        next.unwrap_or_else(|| "never".into())
                    );
                }
            }
        }
        ScheduleCommand::Show { id } => {
            let Some(d) = store.get(&id).await? else {
                anyhow::bail!("no schedule {id:?}");
            };
            let status = store.status(&id).await?;
            let next = d
                .validate()
                .ok()
                .and_then(|e| e.next_after(chrono_now()))
                .map(|n| n.to_rfc3339());
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "schedule": d, "status": status, "next_fire": next,
                }))?
            );
        }
        ScheduleCommand::Rm { id } => {
            if !store.remove(&id).await? {
                anyhow::bail!("no schedule {id:?}");
            }
            println!("schedule {id} removed");
        }
        ScheduleCommand::Pause { id } => {
            if !store.set_enabled(&id, false).await? {
                anyhow::bail!("no schedule {id:?}");
            }
            println!("schedule {id} paused");
        }
        ScheduleCommand::Resume { id } => {
            if !store.set_enabled(&id, true).await? {
                anyhow::bail!("no schedule {id:?}");
            }
            println!("schedule {id} resumed");
        }
        ScheduleCommand::Trigger { id } => {
            let task_id = store.trigger(&id).await?;
            println!("{task_id}");
        }
        ScheduleCommand::Leader => match broker.inspector().scheduler_lease().await? {
            Some(l) => println!(
                "{} (token {}, lease expires in {} ms)",
                l.holder, l.token, l.ttl_ms
            ),
            None => println!("no active scheduler"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
