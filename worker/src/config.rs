//! Worker configuration.

use std::time::Duration;

/// How one worker process consumes.
#[derive(Debug, Clone)]
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
        }
    }
}

/// `host-pid-xxxxxx`: unique per process, readable in `XINFO CONSUMERS`.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..6])
}
