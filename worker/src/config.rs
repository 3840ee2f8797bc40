//! Worker configuration.

use std::time::Duration;

/// How one worker process consumes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The queues to read (default: the queues of the registered tasks).
    pub queues: Vec<String>,
    /// Tasks run at once (default 16).
    pub concurrency: usize,
    /// Messages read ahead of free execution slots (default: equal to `concurrency`).
    pub prefetch: usize,
    /// Longest one XREADGROUP blocks waiting for work (default 1 s); also bounds how long
    /// shutdown waits for a read in progress.
    pub block: Duration,
    /// On shutdown, how long in-flight tasks may run on before they are abandoned (left
    /// unacked, so they are redelivered). Default 30 s.
    pub shutdown_timeout: Duration,
    /// This process's consumer name in the group (default: `host-pid-random`).
    pub consumer: String,
    /// A message whose worker has not refreshed its lease for this long is taken over by
    /// another worker (default 20 s). Live workers refresh every third of it, so a long task is
    /// never stolen; a dead worker's messages are redelivered about this long after it died.
    pub visibility_timeout: Duration,
    /// A message delivered more than this many times without finishing is a dead letter
    /// (default 5): its workers keep dying on it.
    pub max_deliveries: u64,
    /// A consumer idle this long that holds nothing is removed from the group (default 1 h).
    pub consumer_retention: Duration,
    /// How long a cancelled running task may go on (its token has fired) before its future is
    /// dropped (default 5 s).
    pub cancel_grace: Duration,
    /// Taskiq streams this worker also serves: each message is handed on to its task's kiq
    /// queue (which this worker must read) and its result written where Python reads it.
    pub taskiq: Vec<kiq_broker::taskiq::TaskiqStream>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            concurrency: 16,
            prefetch: 16,
            block: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            consumer: default_consumer_name(),
            visibility_timeout: Duration::from_secs(20),
            max_deliveries: 5,
            consumer_retention: Duration::from_secs(3600),
            cancel_grace: Duration::from_secs(5),
            taskiq: Vec::new(),
        }
    }
}

impl WorkerConfig {
    /// How often this worker refreshes the leases of what it holds.
    pub fn lease_refresh_interval(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(100))
    }

    /// How often this worker looks for messages abandoned by dead workers.
    pub fn reclaim_interval(&self) -> Duration {
        (self.visibility_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// `host-pid-xxxxxx`: unique per process, readable in `XINFO CONSUMERS`.
pub fn default_consumer_name() -> String {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}-{}",
        kiq_broker::config::hostname(),
        std::process::id(),
        &rand[..6]
    )
}
