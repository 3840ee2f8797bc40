//! `kiq-bench-listing`: do the operators' listings stay fast on a big Redis?
//!
//! Fills a private `redis-server` with what a busy deployment holds (by default 1,000,000
//! finished tasks over 10 queues, records and index entries as workers write them; 100,000 dead
//! letters; 100,000 waiting tasks; 30 days of history for 20 task names), then times every
//! listing route of the HTTP API, served in this process over loopback, and the dashboard's
//! page: p50, p95 and the slowest of `--samples` requests each. It prints figures and never
//! fails on a timing.
//!
//! ```text
//! cargo build --release -p kiq-bench
//! target/release/kiq-bench-listing [--tasks 1000000] [--dead 100000] [--samples 30]
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kiq::broker::{Keys, KiqWire, TaskRecord, TaskState, WireFormat};

use kiq_testkit::TestRedis;

#[derive(Parser)]
#[command(about = "Listing latency of the HTTP API on a big Redis")]
struct Args {
    /// Finished tasks to store (records and index entries).
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Dead letters to store (in one lane, as a busy queue collects them; the stream is capped
    /// near 100,000).
    #[arg(long, default_value_t = 100_000)]
    dead: u64,
    /// Waiting tasks to store (in one queue).
    #[arg(long, default_value_t = 100_000)]
    waiting: u64,
    /// Requests per route.
    #[arg(long, default_value_t = 30)]
    samples: usize,
}

const QUEUES: u64 = 10;
const TASK_NAMES: u64 = 20;
const TOKEN: &str = "listing-bench-token";
/// Commands per pipeline while filling.
const CHUNK: u64 = 5_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let redis = TestRedis::start().context("starting a private redis-server")?;
    let url = redis.url();
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(120))),
        )
        .await?;
    let keys = Keys::new("kiq");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "kiq-bench-listing: {} finished tasks, {} dead letters, {} waiting, {profile} build",
        args.tasks, args.dead, args.waiting
    );

    let t = Instant::now();
    let now = kiq::broker::envelope::now_ms();
    fill_finished(&mut conn, &keys, args.tasks, now).await?;
    fill_dead(&mut conn, &keys, args.dead, now).await?;
    fill_history(&mut conn, &keys, now).await?;
    let broker = kiq::Broker::connect(&url).await?;
    let mut left = args.waiting;
    while left > 0 {
        let n = left.min(10_000);
        kiq_examples::bench::noop::kicker()
            .queue("q1")
            .kiq_many(&broker, (0..n).map(|_| ()))
            .await?;
        left -= n;
    }
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    println!(
        "filled in {:.1} s: {dbsize} keys, {used} of Redis memory",
        t.elapsed().as_secs_f64()
    );

    // The server, in this process, on a loopback port.
    let router = kiq::server::router(broker.clone(), kiq::server::ServerConfig::new(TOKEN))
        .map_err(|e| anyhow::anyhow!("router: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(kiq::server::serve(listener, router, stop.clone()));

    // A cursor deep in one queue's index: the 80,000th newest succeeded task of q3.
    let deep: Vec<(String, u64)> = redis::cmd("ZREVRANGE")
        .arg(keys.index("q3", TaskState::Succeeded))
        .arg(80_000)
        .arg(80_000)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    let deep_cursor = deep
        .first()
        .map(|(id, at)| format!("{at}:{id}"))
        .unwrap_or_default();
    let some_id = task_id(12_345);
    let hour = 3_600_000u64;
    let routes: Vec<(String, String)> = vec![
        ("dashboard page".into(), "/".into()),
        (
            "stats (queues, workers, totals)".into(),
            "/api/stats".into(),
        ),
        (
            "succeeded, every queue, 100".into(),
            "/api/tasks?state=succeeded&limit=100".into(),
        ),
        (
            "succeeded, one queue, 100".into(),
            "/api/tasks?state=succeeded&queue=q3&limit=100".into(),
        ),
        (
            "succeeded, one queue, page at 80,000".into(),
            format!("/api/tasks?state=succeeded&queue=q3&limit=100&cursor={deep_cursor}"),
        ),
        (
            "failed, every queue, 100".into(),
            "/api/tasks?state=failed&limit=100".into(),
        ),
        (
            "pending, 100 of 100,000 waiting".into(),
            "/api/tasks?state=pending&queue=q1&limit=100".into(),
        ),
        ("one task by id".into(), format!("/api/tasks/{some_id}")),
        ("dead letters, 100".into(), "/api/dead?limit=100".into()),
        (
            "dead letters of one task name, 100".into(),
            "/api/dead?task=app::task7&limit=100".into(),
        ),
        (
            "dead letters of a name none has".into(),
            "/api/dead?task=app::nothing&limit=100".into(),
        ),
        (
            "history, 1 h by minute".into(),
            format!("/api/stats/history?from={}&to={now}&step=60", now - hour),
        ),
        (
            "history, 24 h by 10 min".into(),
            format!(
                "/api/stats/history?from={}&to={now}&step=600",
                now - 24 * hour
            ),
        ),
        (
            "history, 7 d by hour".into(),
            format!(
                "/api/stats/history?from={}&to={now}&step=3600",
                now - 168 * hour
            ),
        ),
        (
            "per task name, 1 h".into(),
            "/api/stats/tasks?range=1h".into(),
        ),
        (
            "per task name, 24 h".into(),
            "/api/stats/tasks?range=24h".into(),
        ),
        (
            "per task name, 7 d".into(),
            "/api/stats/tasks?range=7d".into(),
        ),
        ("schedules".into(), "/api/schedules".into()),
        ("metrics".into(), "/metrics".into()),
    ];
    println!();
    println!("| route | p50 (ms) | p95 (ms) | slowest (ms) | response (KiB) |");
    println!("|---|---|---|---|---|");
    for (name, path) in routes {
        let url = format!("{base}{path}");
        let samples = args.samples;
        let (times, size, status, body) = tokio::task::spawn_blocking(move || {
            let auth = format!("Bearer {TOKEN}");
            let mut times = Vec::with_capacity(samples);
            let mut size = 0;
            let mut status = 0;
            let mut body = String::new();
            for _ in 0..samples {
                let t = Instant::now();
                let r = kiq_testkit::http::request("GET", &url, &[("Authorization", &auth)], None);
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                if let Ok(r) = r {
                    size = r.body.len();
                    status = r.status;
                    if status != 200 {
                        body = String::from_utf8_lossy(&r.body).into_owned();
                    }
                }
            }
            (times, size, status, body)
        })
        .await?;
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| sorted[((p * (sorted.len() - 1) as f64).round()) as usize];
        let flag = if status == 200 {
            String::new()
        } else {
            format!(" (status {status}: {body})")
        };
        println!(
            "| {name}{flag} | {:.1} | {:.1} | {:.1} | {:.1} |",
            pct(0.5),
            pct(0.95),
            sorted[sorted.len() - 1],
            size as f64 / 1024.0
        );
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

fn task_id(i: u64) -> String {
    format!("{i:032x}")
}

fn task_name(i: u64) -> String {
    format!("app::task{}", i % TASK_NAMES)
}

/// `n` finished tasks over [`QUEUES`] queues (94 % succeeded, 3 % failed, 3 % cancelled, one a
/// millisecond apart over the last `n` ms), each with the record a worker writes and its index
/// entry.
async fn fill_finished(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    n: u64,
    now: u64,
) -> anyhow::Result<()> {
    for q in 0..QUEUES {
        let _: () = redis::cmd("SADD")
            .arg(keys.queues())
            .arg(format!("q{q}"))
            .query_async(conn)
            .await?;
    }
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let mut pipe = redis::pipe();
        for i in start..end {
            let id = task_id(i);
            let queue = format!("q{}", i % QUEUES);
            let state = match i % 100 {
                0..=2 => TaskState::Failed,
                3..=5 => TaskState::Cancelled,
                _ => TaskState::Succeeded,
            };
            let finished = now - (n - i);
            let mut r = TaskRecord::accepted(&task_name(i), &queue, finished - 40, false);
            r.enter(TaskState::Pending, finished - 40, 0, None);
            r.enter(
                TaskState::Running,
                finished - 20,
                0,
                Some("host-1234-abcd".into()),
            );
            r.enter(state, finished, 0, None);
            r.started_at_ms = Some(finished - 20);
            r.finished_at_ms = Some(finished);
            r.attempts = 1;
            r.worker = Some("host-1234-abcd".into());
            r.output = Some(vec![0xc0]);
            let bytes = KiqWire.encode_record(&r)?;
            pipe.cmd("SET")
                .arg(keys.task(&id))
                .arg(bytes)
                .arg("EX")
                .arg(86_400)
                .ignore();
            pipe.cmd("ZADD")
                .arg(keys.index(&queue, state))
                .arg(finished)
                .arg(&id)
                .ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        start = end;
    }
    Ok(())
}

/// `n` dead letters in queue `q0`'s normal lane, of 20 task names, with the fields a worker
/// writes (a 200-byte payload each).
async fn fill_dead(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    n: u64,
    now: u64,
) -> anyhow::Result<()> {
    let payload = vec![0x42u8; 200];
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let mut pipe = redis::pipe();
        for i in start..end {
            pipe.cmd("XADD")
                .arg(keys.dead("q0"))
                .arg("*")
                .arg("reason")
                .arg("retries_exhausted")
                .arg("error")
                .arg("connection refused (os error 111)")
                .arg("stream_id")
                .arg(format!("{}-0", now - n + i))
                .arg("attempts")
                .arg(4)
                .arg("at_ms")
                .arg(now - n + i)
                .arg("payload")
                .arg(&payload)
                .arg("task_id")
                .arg(format!("d{i:031x}"))
                .arg("task")
                .arg(task_name(i))
                .ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        start = end;
    }
    Ok(())
}

/// 48 hours of minute buckets and 30 days of hour buckets, each counting every task name on
/// every queue (what a steadily busy deployment leaves).
async fn fill_history(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    now: u64,
) -> anyhow::Result<()> {
    let now_s = now / 1000;
    let mut fields: Vec<(String, u64)> = Vec::new();
    for q in 0..QUEUES {
        for (c, v) in [
            ("succeeded", 940),
            ("failed", 30),
            ("cancelled", 30),
            ("ran", 970),
            ("wait_ms", 9_700),
            ("run_ms", 19_400),
            ("r3", 900),
            ("r5", 70),
            ("w2", 970),
        ] {
            fields.push((format!("q:q{q}:{c}"), v));
        }
    }
    for t in 0..TASK_NAMES {
        for (c, v) in [
            ("succeeded", 470),
            ("failed", 15),
            ("dead", 1),
            ("retried", 20),
            ("ran", 485),
            ("wait_ms", 4_850),
            ("run_ms", 9_700),
            ("r3", 450),
            ("r5", 35),
            ("w2", 485),
        ] {
            fields.push((format!("t:app::task{t}:{c}"), v));
        }
    }
    let mut pipe = redis::pipe();
    for m in 0..48 * 60 {
        let start = now_s - now_s % 60 - m * 60;
        let key = keys.history(60, start);
        pipe.cmd("HSET").arg(&key).arg(&fields).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(48 * 3600).ignore();
    }
    for h in 0..30 * 24 {
        let start = now_s - now_s % 3600 - h * 3600;
        let key = keys.history(3600, start);
        pipe.cmd("HSET").arg(&key).arg(&fields).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(30 * 86_400).ignore();
    }
    let _: () = pipe.query_async(conn).await?;
    Ok(())
}
