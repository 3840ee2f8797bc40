//! Bounded Redis memory: run many tasks with a short result TTL, then check Redis memory
//! returns to near where it started (streams trimmed, results expired, nothing left behind).
//! `KIQ_SOAK_TASKS` sets the count (CI: 30,000; `docs/guarantees.md` records a 1,000,000 run).

mod support;

use std::time::{Duration, Instant};

use kiq_examples::math;
use support::{redis_and_broker, wait_until, Workers};

fn info_field(redis: &support::RedisServer, section: &str, field: &str) -> u64 {
    let info = redis.command(&format!("INFO {section}")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_returns_to_baseline_after_a_soak() {
    let n: i64 = std::env::var("KIQ_SOAK_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let (redis, broker) = redis_and_broker().await;
    // The queue's stream, group and registry entry exist before the baseline is taken.
    redis
        .command("XGROUP CREATE {kiq:default}:stream kiq 0 MKSTREAM")
        .unwrap();
    redis.command("SADD {kiq}:queues default").unwrap();
    let workers = Workers::start(
        &redis.url(),
        2,
        &["--concurrency", "64", "--result-ttl", "2s"],
    );
    // The baseline is taken once both workers are connected and reading (their connections
    // count in Redis's memory): taken earlier, it depended on how fast they started.
    assert!(wait_until(Duration::from_secs(30), || {
        redis
            .command("XINFO CONSUMERS {kiq:default}:stream kiq")
            .map(|r| r.matches("name").count() == 2)
            .unwrap_or(false)
    }));
    redis.command("MEMORY PURGE").unwrap();
    let before = info_field(&redis, "memory", "used_memory");
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch = (i..(i + 5000).min(n)).map(|k| (k, 1));
        math::add::kiq_many(&broker, batch).await.unwrap();
        i += 5000;
    }
    let peak_len = info_field(&redis, "memory", "used_memory");
    // Drained: the stream is empty and nothing is pending.
    assert!(wait_until(Duration::from_secs(600), || {
        redis
            .command("XLEN {kiq:default}:stream")
            .map(|r| r.trim() == ":0")
            .unwrap_or(false)
            && redis
                .command("XPENDING {kiq:default}:stream kiq")
                .map(|r| r.starts_with("*4\r\n:0"))
                .unwrap_or(false)
    }));
    let drained = started.elapsed();
    // Results expire (2 s TTL): no task record is left, only the queues' own keys.
    let task_keys = || {
        redis
            .command("EVAL \"return #redis.call('KEYS', '{kiq:t:*')\" 0")
            .map(|r| r.trim().to_string())
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(120), || task_keys() == ":0"),
        "task records left: {}",
        task_keys()
    );
    // The finished-task index is trimmed by the workers to the result TTL as well.
    let indexed = || {
        redis
            .command("ZCARD {kiq:default}:finished:succeeded")
            .map(|r| r.trim().to_string())
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(60), || indexed() == ":0"),
        "index entries left: {}",
        indexed()
    );
    assert!(workers.stop().success());
    let consumers = redis
        .command("XINFO CONSUMERS {kiq:default}:stream kiq")
        .unwrap();
    assert!(
        !consumers.contains("name"),
        "clean exits leave no consumers: {consumers}"
    );
    // Idle clients' buffers are shrunk by Redis's client cron (about every 2 s): wait for
    // memory to settle (bounded) before judging it.
    let settled = || {
        redis.command("MEMORY PURGE").unwrap();
        info_field(&redis, "memory", "used_memory")
    };
    wait_until(Duration::from_secs(15), || settled() < before + 512 * 1024);
    let after = settled();
    println!(
        "soak: {n} tasks drained in {drained:?}; used_memory before {before} B, after enqueue {peak_len} B, after {after} B"
    );
    assert!(
        after < before + 512 * 1024,
        "Redis memory grew by {} bytes",
        after.saturating_sub(before)
    );
}
