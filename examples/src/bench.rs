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
