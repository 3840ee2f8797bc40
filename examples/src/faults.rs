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

/// Fails until it is on attempt `succeed_on` (0-based), then returns the attempt number. With
/// `retries = 3`, `fail_until(2)` fails twice and succeeds on its second retry.
#[kiq::task(retries = 3, backoff = "fixed", backoff_delay = "100ms")]
pub async fn fail_until(succeed_on: u32) -> Result<u32, String> {
    let attempt = kiq::current_task().map(|t| t.attempt).unwrap_or(0);
    if attempt < succeed_on {
        return Err(format!("attempt {attempt} fails on purpose"));
    }
    Ok(attempt)
}

/// Sleeps `ms` milliseconds with no timeout: a long task.
#[kiq::task]
pub async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Aborts the whole worker process: a crash loop, for poison-message handling.
#[kiq::task]
pub async fn abort_process() {
    std::process::abort();
}

/// Sleeps `ms`, then counts one execution of item `n` in the Redis hash `key` (at
/// `KIQ_REDIS_URL`), so tests can tell lost work (count 0) from duplicates (count > 1).
#[kiq::task(retries = 10, backoff = "fixed", backoff_delay = "200ms")]
pub async fn tally(key: String, n: u64, ms: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let mut conn = side_effect_redis().await?;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(&key)
        .arg(n)
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// Holds its runtime thread for `ms` without awaiting (a blocking call made where it should
/// not be, or a long CPU-bound loop), then counts one execution of item `n` in `key`, as
/// [`tally()`] does. Code like this stalls every task sharing its thread; it must not cost the
/// task its lease.
#[kiq::task]
pub async fn hog(key: String, n: u64, ms: u64) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(ms));
    tally(key, n, 0).await
}

/// Fails unless the Redis key `key` exists: a task that succeeds once an operator fixes
/// something (used to show dead-letter replay).
#[kiq::task]
pub async fn gate(key: String) -> Result<String, String> {
    let mut conn = side_effect_redis().await?;
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if exists {
        Ok(format!("{key} is open"))
    } else {
        Err(format!("{key} is closed"))
    }
}

/// A connection for the example tasks' own side effects (not kiq's): `KIQ_REDIS_URL`, in any
/// form kiq takes (one Redis, Sentinel, cluster).
pub(crate) async fn side_effect_redis() -> Result<kiq::broker::RedisConnection, String> {
    let url = std::env::var("KIQ_REDIS_URL").map_err(|_| "KIQ_REDIS_URL is not set".to_string())?;
    kiq::broker::connect_redis(&url)
        .await
        .map_err(|e| e.to_string())
}

/// Like [`nap`](fn@nap), but a dead worker's message of this task waits 6 s (not the worker's
/// visibility timeout) before another worker takes it over.
#[kiq::task(visibility_timeout = "6s")]
pub async fn patient_nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Works through `steps` steps of 100 ms, reporting `(done, steps)` as progress after each.
#[kiq::task]
pub async fn crunch(steps: u32) -> Result<u32, String> {
    let me = kiq::current_task();
    for done in 1..=steps {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(me) = &me {
            me.set_progress(&(done, steps))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(steps)
}
