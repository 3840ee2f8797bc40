//! Tasks that misbehave on purpose, to show (and test) how kiq contains them.

use std::time::Duration;

/// Panics: recorded as a failure of kind `panic`; the worker carries on.
#[kiq::task]
pub async fn explode(message: String) -> u32 {
    panic!("{message}");
}

/// Sleeps `ms` milliseconds, then returns it. Its one-second timeout stops longer sleeps.
#[kiq::task(timeout = "1s")]
pub async fn sleepy(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Fails with an `anyhow` error chain: the caller gets the whole chain as the message.
#[kiq::task]
pub async fn flaky(reason: String) -> anyhow::Result<()> {
    Err(anyhow::anyhow!("{reason}").context("flaky task gave up"))
}
