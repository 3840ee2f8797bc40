//! Seeds 002 and 004: maintenance tasks run from a table of schedules with enabled flags,
//! retries and timeouts, managed at run time (see the `schedule-table` binary).

use std::time::Duration;

/// Deletes old log entries (here: pretends to, and reports how many days it kept).
#[kiq::task(queue = "maintenance")]
pub async fn cleanup_old_logs(keep_days: u32) -> u32 {
    keep_days
}

/// Sends daily summary reports to `recipients`.
#[kiq::task(queue = "maintenance")]
pub async fn send_daily_reports(recipients: Vec<String>) -> usize {
    recipients.len()
}

/// Synchronises data with an external service (simulated latency).
#[kiq::task(queue = "maintenance")]
pub async fn sync_external_data(source: String) -> String {
    tokio::time::sleep(Duration::from_millis(10)).await;
    format!("synced {source}")
}

/// A system health check.
#[kiq::task(queue = "maintenance")]
pub async fn health_check() -> bool {
    true
}

/// One row of the schedule table (the seeds' `TASK_DEFINITIONS`).
#[derive(Debug, Clone)]
pub struct TaskDefinition {
    /// Schedule id.
    pub id: &'static str,
    /// What operators call it.
    pub name: &'static str,
    /// The task to run.
    pub task: &'static str,
    /// When.
    pub schedule: &'static str,
    /// Its arguments, as JSON.
    pub args: &'static str,
    /// Whether it fires.
    pub enabled: bool,
    /// Retries per run.
    pub max_retries: u32,
    /// Per-attempt timeout, seconds.
    pub timeout_secs: u64,
}

/// The table: the seeds' four maintenance jobs.
pub const TASK_DEFINITIONS: &[TaskDefinition] = &[
    TaskDefinition {
        id: "cleanup_old_logs",
        name: "Cleanup Old Logs",
        task: cleanup_old_logs::SPEC.name,
        schedule: "0 0 * * *",
        args: "[30]",
        enabled: true,
        max_retries: 3,
        timeout_secs: 300,
    },
    TaskDefinition {
        id: "send_daily_reports",
        name: "Send Daily Reports",
        task: send_daily_reports::SPEC.name,
        schedule: "0 9 * * *",
        args: r#"[["ops@example.com"]]"#,
        enabled: true,
        max_retries: 2,
        timeout_secs: 600,
    },
    TaskDefinition {
        id: "sync_external_data",
        name: "Sync External Data",
        task: sync_external_data::SPEC.name,
        schedule: "@every 1h",
        args: r#"["crm"]"#,
        enabled: false,
        max_retries: 3,
        timeout_secs: 1800,
    },
    TaskDefinition {
        id: "health_check",
        name: "System Health Check",
        task: health_check::SPEC.name,
        schedule: "@every 5m",
        args: "[]",
        enabled: true,
        max_retries: 0,
        timeout_secs: 30,
    },
];

/// Stores every row of `table` as a schedule (creating or updating it, keeping an operator's
/// pause); returns how many.
pub async fn load_table(broker: &kiq::Broker, table: &[TaskDefinition]) -> Result<usize, String> {
    let store = kiq::Schedules::new(broker);
    for row in table {
        let mut def = kiq::ScheduleDef::new(row.id, row.task, row.schedule);
        def.args = serde_json::from_str(row.args).map_err(|e| format!("{}: {e}", row.id))?;
        def.enabled = match store.get(row.id).await.map_err(|e| e.to_string())? {
            Some(existing) => existing.enabled,
            None => row.enabled,
        };
        def.retries = Some(row.max_retries);
        def.timeout_secs = Some(row.timeout_secs);
        def.description = Some(row.name.to_string());
        store.put(def).await.map_err(|e| e.to_string())?;
    }
    Ok(table.len())
}

/// The `schedule-table` program: loads [`TASK_DEFINITIONS`] into the Redis at `KIQ_REDIS_URL`
/// (default `redis://127.0.0.1:6379`) and lists the stored schedules. A library function so that
/// the end-to-end tests' copy of the binary runs the very same code.
pub async fn schedule_table() -> anyhow::Result<()> {
    let url = std::env::var("KIQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let broker = kiq::Broker::connect(&url).await?;
    let n = load_table(&broker, TASK_DEFINITIONS)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{n} schedules loaded:");
    for d in kiq::Schedules::new(&broker).list().await? {
        println!(
            "  {:<20} {:<12} enabled={:<5} retries={:?} timeout={:?}s  {}",
            d.id,
            d.schedule,
            d.enabled,
            d.retries,
            d.timeout_secs,
            d.description.unwrap_or_default()
        );
    }
    Ok(())
}
