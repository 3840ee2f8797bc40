//! Tasks the benchmark (`kiq-bench`) measures kiq with.

/// Does nothing: the cost measured is kiq's own.
#[kiq::task(queue = "bench")]
pub async fn noop() {}

/// Returns the length of its payload: for measuring how cost grows with payload size.
#[kiq::task(queue = "bench")]
pub async fn echo_len(payload: String) -> usize {
    payload.len()
}
