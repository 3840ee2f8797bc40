//! Tasks the benchmark (`kiq-bench`) measures kiq with.

/// Does nothing: the cost measured is kiq's own.
#[kiq::task(queue = "bench")]
pub async fn noop() {}

/// Returns the length of its payload: for measuring how cost grows with payload size.
#[kiq::task(queue = "bench")]
pub async fn echo_len(payload: String) -> usize {
    payload.len()
}

/// Returns when it ran (ms since the epoch): for measuring how late delayed tasks start.
#[kiq::task(queue = "bench")]
pub async fn stamp() -> u64 {
    kiq::broker::envelope::now_ms()
}

/// Returns how many `sequence` tasks this process started before it: with one worker at
/// concurrency 1, the order tasks started in.
#[kiq::task(queue = "bench")]
pub async fn sequence() -> u64 {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}
