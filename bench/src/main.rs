//! `kiq-bench`: kiq's benchmark suite. Starts a private Redis (or targets `--redis-url`), measures
//! kiq and, on the same instance in the same run, what raw Redis does for the same command mix, and
//! prints a table (and JSON with `--json FILE`). Build with `--release` for real figures:
//!
//! ```text
//! cargo build --release -p kiq-bench -p kiq-examples --bins
//! target/release/kiq-bench --tasks 100000
//! ```
//!
//! Its workers are `kiq-examples`' `taskctl` (which links the bench tasks, `kiq_examples::bench`),
//! run from the directory `kiq-bench` itself is in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use kiq::{Broker, BrokerConfig};
use kiq_examples::bench;
use kiq_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Benchmark kiq against raw Redis on the same instance")]
struct Args {
    /// Tasks per throughput measurement.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Background load (tasks/s) for the loaded latency measurement.
    #[arg(long, default_value_t = 2_000)]
    load_rate: u64,
    /// Also measure how cost grows with queue depth, payload size and worker count.
    #[arg(long)]
    scaling: bool,
    /// Use this Redis instead of starting a private one (it is written to under prefix `kiqbench*`).
    #[arg(long)]
    redis_url: Option<String>,
    /// Only compare one Redis with Redis Clusters of 1, 2 and 3 masters (started here): drain
    /// rate, and Redis CPU and commands per task on every node
    #[arg(long)]
    cluster: bool,
    /// Only measure Taskiq interop: N Taskiq messages (as a Python producer sends them) served
    /// by kiq workers (`--taskiq`), against kiq's own drain of N tasks in the same run
    #[arg(long)]
    taskiq: bool,
    /// Only the drain of N no-op tasks by one worker process (its rate, CPU and the Redis memory
    /// each finished task keeps): the phase to profile
    #[arg(long)]
    drain_only: bool,
    /// Only dispatch: 64 concurrent `.kiq()` callers against the raw baseline (with the
    /// client's and Redis's CPU per task), then one caller against raw round trips,
    /// alternating for `--rounds` rounds of N tasks each: the phase to profile for dispatch
    #[arg(long)]
    dispatch_only: bool,
    /// Rounds of `--dispatch-only`.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One row of the results.
struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    ceiling: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.cluster {
        return cluster_comparison(args.tasks.max(100)).await;
    }
    if args.taskiq {
        return taskiq_comparison(args.tasks.max(100)).await;
    }
    let _private;
    let url = match &args.redis_url {
        Some(u) => u.clone(),
        None => {
            let r = RedisServer::start().context("starting a private redis-server")?;
            let u = r.url();
            _private = r;
            u
        }
    };
    let taskctl = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .join("taskctl");
    if !taskctl.exists() {
        bail!(
            "{} not found: build kiq-examples' taskctl first (cargo build -p kiq-examples --bins)",
            taskctl.display()
        );
    }
    // The bench's own connection runs FLUSHALL and INFO between phases: redis-rs's default
    // response timeout (500 ms) is shorter than a FLUSHALL of a few hundred thousand keys on
    // a busy 2-core machine.
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(60))),
        )
        .await?;
    let n = args.tasks.max(100);
    let mut rows: Vec<Row> = Vec::new();
    let mut extra = serde_json::Map::new();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("kiq-bench: {n} tasks per run, {profile} build, Redis at {url}");

    // The payload a no-op task puts on the wire, for raw commands of the same size.
    let probe = broker(&url, "kiqbench-probe").await?;
    let envelope = probe.prepare(&bench::noop::kicker(), &())?.payload;
    // A succeeded record of a unit output, encoded (`--drain-only` prints its STRLEN).
    let record_len = 104usize;

    if args.dispatch_only {
        return dispatch_only(&url, &mut conn, &envelope, n, args.rounds.max(1)).await;
    }
    if args.drain_only {
        raw_xadd_rate(&mut conn, "kiqbench-raw", &envelope, n).await?;
        let raw_drain = raw_consume_rate(&mut conn, "kiqbench-raw", n, record_len).await?;
        flush(&mut conn).await?;
        let (rate, cmds, (rss, cpu)) =
            drain(&taskctl, &url, "kiqbench-drain1", 1, n, &mut conn, None).await?;
        rows.push(row(
            "drain no-op tasks, 1 worker process(es)",
            rate,
            "tasks/s",
            Some(raw_drain),
        ));
        rows.push(row(
            "  worker CPU per task (drain, 1 process(es))",
            cpu,
            "µs",
            None,
        ));
        rows.push(row(
            "  Redis CPU per task (drain, 1 process(es))",
            cmds.2.get("redis_cpu_us").copied().unwrap_or(f64::NAN),
            "µs",
            None,
        ));
        memory_rows(&mut rows, &cmds.2);
        rows.push(row(
            "Redis commands per task (drain, worker side)",
            cmds.0,
            "cmds",
            None,
        ));
        rows.push(row(
            "worker RSS, peak (VmHWM)",
            rss as f64 / 1024.0,
            "MiB",
            None,
        ));
        print_table(&rows);
        return Ok(());
    }

    // --- Ceilings: raw Redis, same instance, same command mix ---------------------------------
    let cpu = CpuMeter::start(&mut conn).await?;
    let raw_xadd = raw_xadd_rate(&mut conn, "kiqbench-raw", &envelope, n).await?;
    let raw_xadd_cpu = cpu.per_task(&mut conn, n).await?;
    let cpu = CpuMeter::start(&mut conn).await?;
    let raw_enqueue_batched =
        raw_enqueue_batched_rate(&mut conn, "kiqbench-raw2", &envelope, n).await?;
    let raw_enqueue_cpu = cpu.per_task(&mut conn, n).await?;
    let single_n = (n / 5).clamp(100, 20_000);
    let raw_enqueue_single =
        raw_enqueue_single_rate(&mut conn, "kiqbench-raw2", &envelope, single_n).await?;
    let raw_enqueue = (raw_enqueue_batched, raw_enqueue_single);
    let raw_drain = raw_consume_rate(&mut conn, "kiqbench-raw", n, record_len).await?;

    // --- Enqueue ---------------------------------------------------------------------------------
    let b = broker(&url, "kiqbench-enq").await?;
    let t = Instant::now();
    for _ in 0..single_n {
        bench::noop::kiq(&b).await?;
    }
    let single = single_n as f64 / t.elapsed().as_secs_f64();
    rows.push(row(
        "enqueue, one at a time (.kiq awaited)",
        single,
        "tasks/s",
        Some(raw_enqueue.1),
    ));
    // 64 tasks of this process each awaiting `.kiq()` in turn (a web server's handlers), against
    // the same commands (MULTI, SET, XADD, EXEC) sent the same way over one multiplexed
    // connection.
    let per_caller = (single_n / 8).max(10);
    let raw_concurrent =
        raw_enqueue_concurrent_rate(&conn, "kiqbench-raw3", &envelope, CALLERS, per_caller).await?;
    let concurrent = kiq_enqueue_concurrent_rate(&b, CALLERS, per_caller).await?;
    rows.push(row(
        "enqueue, 64 concurrent callers (.kiq awaited)",
        concurrent,
        "tasks/s",
        Some(raw_concurrent),
    ));
    flush(&mut conn).await?;
    let before = used_memory(&mut conn).await?;
    let cpu = CpuMeter::start(&mut conn).await?;
    let t = Instant::now();
    bench::noop::kiq_many(&b, (0..n).map(|_| ())).await?;
    let batched = n as f64 / t.elapsed().as_secs_f64();
    let kiq_enqueue_cpu = cpu.per_task(&mut conn, n).await?;
    let per_task_mem = (used_memory(&mut conn).await?.saturating_sub(before)) as f64 / n as f64;
    rows.push(row(
        "enqueue, batched (kiq_many)",
        batched,
        "tasks/s",
        Some(raw_xadd),
    ));
    rows.push(row(
        "  same, vs raw pipelined SET+XADD",
        batched,
        "tasks/s",
        Some(raw_enqueue.0),
    ));
    rows.push(row(
        "Redis memory per queued task",
        per_task_mem,
        "bytes",
        None,
    ));
    flush(&mut conn).await?;
    let untracked = Broker::from_config(
        BrokerConfig::new(url.as_str())
            .prefix("kiqbench-enq2")
            .track_pending(false),
    )
    .await?;
    let cpu = CpuMeter::start(&mut conn).await?;
    let t = Instant::now();
    bench::noop::kiq_many(&untracked, (0..n).map(|_| ())).await?;
    let batched_untracked = n as f64 / t.elapsed().as_secs_f64();
    let untracked_cpu = cpu.per_task(&mut conn, n).await?;
    rows.push(row(
        "enqueue, batched, track_pending(false)",
        batched_untracked,
        "tasks/s",
        Some(raw_xadd),
    ));
    for (label, (redis_us, client_us)) in [
        ("raw pipelined XADD", raw_xadd_cpu),
        ("raw pipelined SET+XADD", raw_enqueue_cpu),
        ("kiq_many", kiq_enqueue_cpu),
        ("kiq_many, track_pending(false)", untracked_cpu),
    ] {
        rows.push(row(
            &format!("  enqueue CPU per task, Redis: {label}"),
            redis_us,
            "µs",
            None,
        ));
        rows.push(row(
            &format!("  enqueue CPU per task, client: {label}"),
            client_us,
            "µs",
            None,
        ));
    }
    flush(&mut conn).await?;

    // --- Worker RSS idle -------------------------------------------------------------------------
    let idle = Workers::start(&taskctl, &url, "kiqbench-idle", 1)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_rss = idle.rss_kb().first().copied().unwrap_or(0);
    idle.stop();
    rows.push(row(
        "worker RSS, idle",
        idle_rss as f64 / 1024.0,
        "MiB",
        None,
    ));

    // --- Drain: N queued, then workers start -----------------------------------------------------
    let mut peak_rss = 0;
    for procs in [1usize, 2] {
        let prefix = format!("kiqbench-drain{procs}");
        let (rate, cmds, (rss, cpu)) =
            drain(&taskctl, &url, &prefix, procs, n, &mut conn, None).await?;
        peak_rss = peak_rss.max(rss);
        rows.push(row(
            &format!("drain no-op tasks, {procs} worker process(es)"),
            rate,
            "tasks/s",
            Some(raw_drain),
        ));
        rows.push(row(
            &format!("  worker CPU per task (drain, {procs} process(es))"),
            cpu,
            "µs",
            None,
        ));
        rows.push(row(
            &format!("  Redis CPU per task (drain, {procs} process(es))"),
            cmds.2.get("redis_cpu_us").copied().unwrap_or(0.0),
            "µs",
            None,
        ));
        if procs == 1 {
            memory_rows(&mut rows, &cmds.2);
            rows.push(row(
                "Redis commands per task (drain, worker side)",
                cmds.0,
                "cmds",
                None,
            ));
            rows.push(row(
                "Redis commands per task (enqueue, batched)",
                cmds.1,
                "cmds",
                None,
            ));
            extra.insert("commandstats_per_task".into(), json!(cmds.2));
        }
        flush(&mut conn).await?;
    }
    rows.push(row(
        "worker RSS, peak (VmHWM)",
        peak_rss as f64 / 1024.0,
        "MiB",
        None,
    ));

    // --- Round-trip latency ----------------------------------------------------------------------
    let prefix = "kiqbench-lat";
    let workers = Workers::start(&taskctl, &url, prefix, 1)?;
    let b = broker(&url, prefix).await?;
    // Warm up (connections, subscriber).
    for _ in 0..50 {
        bench::noop::kiq(&b)
            .await?
            .wait_result(Duration::from_secs(10))
            .await?;
    }
    let idle_lat = latencies(&b, args.samples).await?;
    let load_stop = tokio_util_stop();
    let loader = tokio::spawn(background_load(
        b.clone(),
        args.load_rate,
        load_stop.clone(),
    ));
    let loaded_lat = latencies(&b, args.samples).await?;
    load_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let load_sent = loader.await??;
    workers.stop();
    for (label, l) in [("idle", &idle_lat), ("under load", &loaded_lat)] {
        rows.push(row(
            &format!("round trip kiq→result p50, {label}"),
            pct(l, 50.0),
            "ms",
            None,
        ));
        rows.push(row(
            &format!("round trip kiq→result p99, {label}"),
            pct(l, 99.0),
            "ms",
            None,
        ));
        rows.push(row(
            &format!("round trip kiq→result p99.9, {label}"),
            pct(l, 99.9),
            "ms",
            None,
        ));
    }
    extra.insert("background_load_sent".into(), json!(load_sent));
    // Delayed tasks: how late they start (never early by design), under the same worker.
    let workers = Workers::start(&taskctl, &url, prefix, 1)?;
    let delayed_n = (args.samples / 4).clamp(20, 500);
    let mut handles = Vec::with_capacity(delayed_n);
    for i in 0..delayed_n {
        let delay = Duration::from_millis(50 + (i as u64 * 37) % 500);
        let due = std::time::SystemTime::now() + delay;
        let h = bench::stamp::kicker().at(due).kiq(&b, ()).await?;
        let due_ms = due.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
        handles.push((due_ms, h));
    }
    let mut lateness = Vec::with_capacity(delayed_n);
    for (due, h) in handles {
        let ran = h.wait_result(Duration::from_secs(30)).await?;
        lateness.push(ran as f64 - due as f64);
    }
    workers.stop();
    lateness.sort_by(|a, b| a.total_cmp(b));
    rows.push(row(
        "delayed-task firing error p50",
        pct(&lateness, 50.0),
        "ms",
        None,
    ));
    rows.push(row(
        "delayed-task firing error p99",
        pct(&lateness, 99.0),
        "ms",
        None,
    ));
    flush(&mut conn).await?;

    // --- Scaling ---------------------------------------------------------------------------------
    if args.scaling {
        let mut scaling = serde_json::Map::new();
        let mut depth = Vec::new();
        for d in [n / 10, n, n * 3] {
            let (rate, ..) = drain(
                &taskctl,
                &url,
                "kiqbench-depth",
                1,
                d.max(100),
                &mut conn,
                None,
            )
            .await?;
            depth.push(json!({"queued": d, "drain_per_s": rate}));
            println!("  scaling: depth {d:>8}: drain {rate:>9.0} tasks/s");
            flush(&mut conn).await?;
        }
        scaling.insert("queue_depth".into(), json!(depth));
        let mut payload = Vec::new();
        for size in [16usize, 1024, 16 * 1024, 128 * 1024] {
            let count = (n / (1 + size / 1024)).clamp(500, n);
            let (rate, ..) = drain(
                &taskctl,
                &url,
                "kiqbench-payload",
                1,
                count,
                &mut conn,
                Some(size),
            )
            .await?;
            payload.push(json!({"payload_bytes": size, "tasks": count, "drain_per_s": rate}));
            println!("  scaling: payload {size:>7} B: drain {rate:>9.0} tasks/s ({count} tasks)");
            flush(&mut conn).await?;
        }
        scaling.insert("payload_size".into(), json!(payload));
        let mut procs = Vec::new();
        for p in [1usize, 2, 4] {
            let (rate, ..) = drain(&taskctl, &url, "kiqbench-procs", p, n, &mut conn, None).await?;
            procs.push(json!({"worker_processes": p, "drain_per_s": rate}));
            println!("  scaling: {p} worker process(es): drain {rate:>9.0} tasks/s");
            flush(&mut conn).await?;
        }
        scaling.insert("worker_processes".into(), json!(procs));
        extra.insert("scaling".into(), json!(scaling));
    }

    print_table(&rows);
    if let Some(path) = &args.json {
        let json = json!({
            "tasks": n, "profile": profile,
            "rows": rows.iter().map(|r| json!({
                "name": r.name, "value": finite(r.value), "unit": r.unit,
                "ceiling": r.ceiling, "fraction_of_ceiling": r.ceiling.map(|c| r.value / c),
            })).collect::<Vec<_>>(),
            "extra": extra,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// The rows of what a finished task keeps in Redis, from a drain's figures.
fn memory_rows(rows: &mut Vec<Row>, figures: &HashMap<String, f64>) {
    let get = |k: &str| figures.get(k).copied().unwrap_or(f64::NAN);
    rows.push(row(
        "Redis memory per finished task (after the drain)",
        get("memory_per_finished_task"),
        "bytes",
        None,
    ));
    rows.push(row(
        "  of which its record (MEMORY USAGE of one)",
        get("memory_record"),
        "bytes",
        None,
    ));
    rows.push(row(
        "  the record's encoding (STRLEN)",
        get("record_encoded"),
        "bytes",
        None,
    ));
    rows.push(row(
        "  its entry of the finished index (MEMORY USAGE / N)",
        get("memory_index_entry"),
        "bytes",
        None,
    ));
}

fn row(name: &str, value: f64, unit: &'static str, ceiling: Option<f64>) -> Row {
    Row {
        name: name.to_string(),
        value,
        unit,
        ceiling,
    }
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<52} {:>12} {:<10} {:>12} {:>9}",
        "measure", "value", "unit", "raw ceiling", "fraction"
    );
    println!("{}", "-".repeat(100));
    for r in rows {
        let value = if r.value.is_finite() {
            format!("{:.2}", r.value)
        } else {
            "-".into()
        };
        let (ceiling, fraction) = match r.ceiling {
            Some(c) => (format!("{c:.0}"), format!("{:.0}%", 100.0 * r.value / c)),
            None => (String::new(), String::new()),
        };
        println!(
            "{:<52} {:>12} {:<10} {:>12} {:>9}",
            r.name, value, r.unit, ceiling, fraction
        );
    }
}

/// A broker on `url` under `prefix`; `KIQBENCH_POOL_SIZE` sets its shared connections (to
/// compare sizes).
async fn broker(url: &str, prefix: &str) -> anyhow::Result<Broker> {
    // `KIQ_RESP=redis-rs` (which `taskctl worker` reads too) puts redis-rs's connections
    // under the bench's own dispatches as well, for an A/B in one build.
    let mut config = BrokerConfig::new(url)
        .prefix(prefix)
        .native_resp(std::env::var("KIQ_RESP").map_or(true, |v| v != "redis-rs"));
    if let Some(n) = std::env::var("KIQBENCH_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.pool_size(n);
    }
    Ok(Broker::from_config(config).await?)
}

async fn flush(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    redis::cmd("FLUSHALL").query_async::<()>(conn).await?;
    Ok(())
}

async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// CPU time spent by Redis (INFO cpu) and by this process (/proc/self/stat) over a span.
struct CpuMeter {
    redis: f64,
    client: f64,
}

impl CpuMeter {
    async fn start(conn: &mut MultiplexedConnection) -> anyhow::Result<Self> {
        Ok(Self {
            redis: redis_cpu(conn).await?,
            client: own_cpu(),
        })
    }

    /// Microseconds of (Redis, client) CPU per task since `start`.
    async fn per_task(
        &self,
        conn: &mut MultiplexedConnection,
        tasks: usize,
    ) -> anyhow::Result<(f64, f64)> {
        let redis = redis_cpu(conn).await? - self.redis;
        let client = own_cpu() - self.client;
        let n = tasks.max(1) as f64;
        Ok((redis * 1e6 / n, client * 1e6 / n))
    }
}

async fn redis_cpu(conn: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user:") + field("used_cpu_sys:"))
}

/// This process's user + system CPU seconds (clock ticks of 1/100 s).
fn own_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// `INFO commandstats` as command → calls.
async fn command_calls(conn: &mut MultiplexedConnection) -> anyhow::Result<HashMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect())
}

fn delta(after: &HashMap<String, u64>, before: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(k, v)| *v > 0 && k != "info")
        .collect()
}

/// Raw pipelined XADD of `payload`, 1000 per pipeline.
async fn raw_xadd_rate(
    conn: &mut MultiplexedConnection,
    stream: &str,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(payload)
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
        left -= k;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Raw SET + XADD per task (kiq's enqueue mix), 1000 tasks per pipeline.
async fn raw_enqueue_batched_rate(
    conn: &mut MultiplexedConnection,
    stream: &str,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut left = n;
    let mut i = 0u64;
    while left > 0 {
        let k = left.min(1000);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            i += 1;
            pipe.cmd("SET")
                .arg(format!("kiqbench-raw:{i}"))
                .arg(payload)
                .arg("EX")
                .arg(600)
                .ignore();
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(payload)
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
        left -= k;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Raw SET + XADD per task, one round trip each (the ceiling of an awaited `.kiq()`).
async fn raw_enqueue_single_rate(
    conn: &mut MultiplexedConnection,
    stream: &str,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    for j in 0..n {
        redis::pipe()
            .cmd("SET")
            .arg(format!("kiqbench-raw1:{j}"))
            .arg(payload)
            .arg("EX")
            .arg(600)
            .ignore()
            .cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("data")
            .arg(payload)
            .ignore()
            .query_async::<()>(conn)
            .await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    redis::cmd("DEL")
        .arg(stream)
        .query_async::<()>(conn)
        .await?;
    Ok(rate)
}

/// How many tasks dispatch at once in the concurrent enqueue measurement.
const CALLERS: usize = 64;

/// Raw concurrent enqueue: `callers` tasks, each sending `per_caller` transactions (MULTI, SET
/// of the record, XADD, EXEC: kiq's dispatch) one after another over clones of one
/// multiplexed connection.
async fn raw_enqueue_concurrent_rate(
    conn: &MultiplexedConnection,
    stream: &str,
    payload: &[u8],
    callers: usize,
    per_caller: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let mut conn = conn.clone();
            let (stream, payload) = (stream.to_string(), payload.to_vec());
            tokio::spawn(async move {
                for j in 0..per_caller {
                    redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(format!("kiqbench-raw3:{c}:{j}"))
                        .arg(&payload)
                        .arg("EX")
                        .arg(600)
                        .ignore()
                        .cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("data")
                        .arg(&payload)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = (callers * per_caller) as f64 / t.elapsed().as_secs_f64();
    let mut conn = conn.clone();
    redis::cmd("DEL")
        .arg(stream)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(rate)
}

/// `callers` tasks of this process each awaiting `.kiq()` `per_caller` times in turn (a web
/// server's handlers).
async fn kiq_enqueue_concurrent_rate(
    b: &Broker,
    callers: usize,
    per_caller: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    bench::noop::kiq(&b).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((callers * per_caller) as f64 / t.elapsed().as_secs_f64())
}

/// `--dispatch-only`: rounds of (raw, kiq) for 64 concurrent callers, then for one caller,
/// each with the client's and Redis's CPU per task. For a profile of one side alone,
/// `KIQBENCH_PROFILE_KIQ=1` skips the raw side and `KIQBENCH_PROFILE_RAW=1` the kiq side (both
/// skip the one-caller part).
async fn dispatch_only(
    url: &str,
    conn: &mut MultiplexedConnection,
    envelope: &[u8],
    n: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let b = broker(url, "kiqbench-enq").await?;
    let per_caller = (n / CALLERS).max(10);
    let single_n = (n / 5).clamp(100, 20_000);
    let mut rows = Vec::new();
    let mut fractions = (Vec::new(), Vec::new());
    // The profiling switches (see above), read once.
    let only_kiq = std::env::var("KIQBENCH_PROFILE_KIQ").is_ok();
    let only_raw = std::env::var("KIQBENCH_PROFILE_RAW").is_ok();
    for round in 1..=rounds {
        flush(conn).await?;
        let cpu = CpuMeter::start(conn).await?;
        let raw = if only_kiq {
            1.0
        } else {
            raw_enqueue_concurrent_rate(conn, "kiqbench-raw3", envelope, CALLERS, per_caller)
                .await?
        };
        let raw_cpu = cpu.per_task(conn, CALLERS * per_caller).await?;
        flush(conn).await?;
        let cpu = CpuMeter::start(conn).await?;
        let kiq = if only_raw {
            1.0
        } else {
            kiq_enqueue_concurrent_rate(&b, CALLERS, per_caller).await?
        };
        let kiq_cpu = cpu.per_task(conn, CALLERS * per_caller).await?;
        fractions.0.push(kiq / raw);
        rows.push(row(
            &format!("round {round}: 64 concurrent callers"),
            kiq,
            "tasks/s",
            Some(raw),
        ));
        for (who, (redis_us, client_us)) in [("raw", raw_cpu), ("kiq", kiq_cpu)] {
            rows.push(row(
                &format!("  CPU per task, {who}: client"),
                client_us,
                "µs",
                None,
            ));
            rows.push(row(
                &format!("  CPU per task, {who}: Redis"),
                redis_us,
                "µs",
                None,
            ));
        }
        flush(conn).await?;
        if only_kiq || only_raw {
            continue;
        }
        let raw = raw_enqueue_single_rate(conn, "kiqbench-raw2", envelope, single_n).await?;
        let t = Instant::now();
        for _ in 0..single_n {
            bench::noop::kiq(&b).await?;
        }
        let kiq = single_n as f64 / t.elapsed().as_secs_f64();
        fractions.1.push(kiq / raw);
        rows.push(row(
            &format!("round {round}: one at a time"),
            kiq,
            "tasks/s",
            Some(raw),
        ));
    }
    flush(conn).await?;
    println!(
        "dispatch: {} tasks per concurrent round, {single_n} one at a time, {rounds} rounds",
        CALLERS * per_caller
    );
    print_table(&rows);
    // (Empty when a profiling switch skipped a side: NaN then.)
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).map_or(f64::NAN, |m| m * 100.0)
    };
    println!(
        "\nmedian fraction of raw: 64 concurrent callers {:.0} %, one at a time {:.0} %",
        median(&mut fractions.0),
        median(&mut fractions.1)
    );
    Ok(())
}

/// Raw consume of `n` entries already in `stream`: XREADGROUP COUNT 512, then per entry a result
/// SET and PUBLISH, then XACK + XDEL (kiq's worker mix, without kiq).
async fn raw_consume_rate(
    conn: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
    record_len: usize,
) -> anyhow::Result<f64> {
    let _: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    let record = vec![7u8; record_len];
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(512)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids)
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            break;
        }
        let mut writes = redis::pipe();
        for id in &ids {
            writes
                .cmd("SET")
                .arg(format!("kiqbench-res:{id}"))
                .arg(&record)
                .arg("EX")
                .arg(600)
                .ignore();
            writes
                .cmd("PUBLISH")
                .arg(format!("kiqbench-done:{id}"))
                .arg(&record)
                .ignore();
        }
        writes.query_async::<()>(conn).await?;
        redis::pipe()
            .cmd("XACK")
            .arg(stream)
            .arg("g")
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(stream)
            .arg(&ids)
            .ignore()
            .query_async::<()>(conn)
            .await?;
        done += ids.len();
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}

/// Enqueues `n` tasks under `prefix`, starts `procs` worker processes, and times the drain.
/// Returns (tasks/s, (worker-side commands per task, enqueue commands per task, all deltas per
/// task), peak worker RSS in KiB).
async fn drain(
    taskctl: &std::path::Path,
    url: &str,
    prefix: &str,
    procs: usize,
    n: usize,
    conn: &mut MultiplexedConnection,
    payload: Option<usize>,
) -> anyhow::Result<(f64, (f64, f64, HashMap<String, f64>), (u64, f64))> {
    let b = broker(url, prefix).await?;
    let before_enqueue = command_calls(conn).await?;
    let memory_before = used_memory(conn).await?;
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        match payload {
            None => {
                bench::noop::kiq_many(&b, (0..k).map(|_| ())).await?;
            }
            Some(size) => {
                let s = "x".repeat(size);
                bench::echo_len::kiq_many(&b, (0..k).map(|_| (s.clone(),))).await?;
            }
        }
        left -= k;
    }
    let after_enqueue = command_calls(conn).await?;
    let stream = format!("{{{prefix}:bench}}:stream");
    let redis_cpu_before = redis_cpu(conn).await?;
    let t = Instant::now();
    let workers = Workers::start(taskctl, url, prefix, procs)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (len, pending): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&stream)
            .cmd("XPENDING")
            .arg(&stream)
            .arg("kiq")
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async::<(u64, Vec<redis::Value>)>(conn)
            .await
            .map(|(l, p)| (l, p.len() as u64))?;
        if len == 0 && pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("drain of {n} tasks did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    // What a finished task keeps in Redis: the growth over enqueue and drain, and the two
    // per-task parts of it (the record, an entry of the finished index), for one sampled task.
    let memory_after = used_memory(conn).await?;
    let index = format!("{{{prefix}:bench}}:finished:succeeded");
    let (sample, index_bytes): (Vec<String>, Option<u64>) = redis::pipe()
        .cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(0)
        .cmd("MEMORY")
        .arg("USAGE")
        .arg(&index)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await?;
    let (record_bytes, record_len): (Option<u64>, u64) = match sample.first() {
        Some(id) => {
            let key = format!("{{{prefix}:t:{id}}}");
            redis::pipe()
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .cmd("STRLEN")
                .arg(&key)
                .query_async(conn)
                .await?
        }
        None => (None, 0),
    };
    // Redis's CPU over the drain (our own polling, a few hundred commands a second, included).
    let redis_cpu_us = (redis_cpu(conn).await? - redis_cpu_before) * 1e6 / n as f64;
    let after_drain = command_calls(conn).await?;
    let rss = workers.peak_rss_kb().into_iter().max().unwrap_or(0);
    // The worker processes' CPU (user + system, from /proc) over their whole life, start-up
    // included (a few ms, under 0.5 µs a task at 50,000).
    let worker_cpu_us = workers.cpu_seconds() * 1e6 / n as f64;
    workers.stop();
    let drain_delta = delta(&after_drain, &after_enqueue);
    let enqueue_delta = delta(&after_enqueue, &before_enqueue);
    // Our own polling (XLEN, XPENDING) is not the worker's.
    let worker_cmds: u64 = drain_delta
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "xlen" | "xpending"))
        .map(|(_, v)| v)
        .sum();
    let enqueue_cmds: u64 = enqueue_delta.values().sum();
    let mut per_task: HashMap<String, f64> = HashMap::new();
    for (k, v) in drain_delta
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "xlen" | "xpending"))
    {
        per_task.insert(format!("drain:{k}"), *v as f64 / n as f64);
    }
    for (k, v) in &enqueue_delta {
        per_task.insert(format!("enqueue:{k}"), *v as f64 / n as f64);
    }
    per_task.insert("redis_cpu_us".into(), redis_cpu_us);
    per_task.insert(
        "memory_per_finished_task".into(),
        memory_after.saturating_sub(memory_before) as f64 / n as f64,
    );
    per_task.insert("memory_record".into(), record_bytes.unwrap_or(0) as f64);
    per_task.insert("record_encoded".into(), record_len as f64);
    per_task.insert(
        "memory_index_entry".into(),
        index_bytes.unwrap_or(0) as f64 / n as f64,
    );
    Ok((
        rate,
        (
            worker_cmds as f64 / n as f64,
            enqueue_cmds as f64 / n as f64,
            per_task,
        ),
        (rss, worker_cpu_us),
    ))
}

/// `--taskiq`: N no-op tasks drained by one worker process from kiq's own queue, then N Taskiq
/// messages for the same task from a Taskiq stream (XADDed as taskiq-redis does, pipelined),
/// each through the bridge, kiq's queue and the worker, its result written where Python reads
/// it (pickle). Rate, and Redis CPU and commands per task.
async fn taskiq_comparison(n: usize) -> anyhow::Result<()> {
    let taskctl = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .join("taskctl");
    let redis = RedisServer::start().context("starting a private redis-server")?;
    let url = redis.url();
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(60))),
        )
        .await?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("kiq-bench --taskiq: {n} no-op tasks per run, 1 worker process, {profile} build");
    println!(
        "{:<58} {:>12} {:>14} {:>14}",
        "", "tasks/s", "Redis µs/task", "cmds/task"
    );

    // kiq's own queue, as the main benchmark's drain.
    let cpu = CpuMeter::start(&mut conn).await?;
    let (rate, cmds, _) = drain(&taskctl, &url, "kiqbench-native", 1, n, &mut conn, None).await?;
    let (redis_us, _) = cpu.per_task(&mut conn, n).await?;
    println!(
        "{:<58} {:>12.0} {:>14.1} {:>14.2}",
        "kiq queue: kiq_many, then drain",
        rate,
        redis_us,
        cmds.0 + cmds.1
    );
    flush(&mut conn).await?;

    // The same task from a Taskiq stream.
    let prefix = "kiqbench-taskiq";
    let stream = "taskiq";
    let name = bench::noop::SPEC.name;
    let before = command_calls(&mut conn).await?;
    let cpu = CpuMeter::start(&mut conn).await?;
    let mut left = n;
    let mut i = 0u64;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("taskiq")
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await?;
    while left > 0 {
        let k = left.min(1000);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            i += 1;
            let msg = format!(
                r#"{{"task_id": "{i:032x}", "task_name": "{name}", "labels": {{}}, "labels_types": {{}}, "args": [], "kwargs": {{}}}}"#
            );
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(msg)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        left -= k;
    }
    let t = Instant::now();
    let workers = Workers::start_with(&taskctl, &url, prefix, 1, &["--taskiq", stream])?;
    let stats = format!("{{{prefix}}}:stats");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: Option<u64> = redis::cmd("HGET")
            .arg(&stats)
            .arg("succeeded")
            .query_async(&mut conn)
            .await?;
        if done.unwrap_or(0) >= n as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{n} Taskiq messages were not served in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    workers.stop();
    let (redis_us, _) = cpu.per_task(&mut conn, n).await?;
    let d = delta(&command_calls(&mut conn).await?, &before);
    let cmds: u64 = d
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "hget"))
        .map(|(_, v)| v)
        .sum();
    // A result Python reads, as written.
    let sample: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{:032x}", 1))
        .query_async(&mut conn)
        .await?;
    println!(
        "{:<58} {:>12.0} {:>14.1} {:>14.2}",
        "Taskiq stream: XADD (as Python), then bridge + drain",
        rate,
        redis_us,
        cmds as f64 / n as f64
    );
    println!(
        "  (a result as Python reads it: {} bytes of pickle)",
        sample.map(|s| s.len()).unwrap_or(0)
    );
    Ok(())
}

/// `--cluster`: the same no-op drain on one Redis and on Redis Clusters of 1, 2 and 3 masters,
/// each started here, with every node's Redis CPU and command count per task.
async fn cluster_comparison(n: usize) -> anyhow::Result<()> {
    let taskctl = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .join("taskctl");
    println!(
        "kiq-bench --cluster: {n} no-op tasks per run, 2 worker processes, one queue; Redis CPU \
         and commands per task on every node"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>14}  per node: Redis CPU µs/task, share of commands",
        "topology", "enqueue/s", "drain/s", "Redis µs/task"
    );
    // (name, URL, every node's port, replica acknowledgements, partitions of the queue, the
    // servers, kept alive)
    type Run = (String, String, Vec<u16>, usize, u16, Box<dyn std::any::Any>);
    let mut runs: Vec<Run> = Vec::new();
    let single = RedisServer::start()?;
    runs.push((
        "single".into(),
        single.url(),
        vec![single.port()],
        0,
        1,
        Box::new(single),
    ));
    for masters in [1usize, 2, 3] {
        let c = kiq_testkit::RedisCluster::start(masters, 0)?;
        let ports = c.nodes().iter().map(|n| n.port()).collect();
        runs.push((
            format!("cluster {masters}"),
            c.url(),
            ports,
            0,
            1,
            Box::new(c),
        ));
    }
    // The queue spread over partitions (each its own hash tag, so its own slot).
    for partitions in [3u16, 6, 12] {
        let c = kiq_testkit::RedisCluster::start(3, 0)?;
        let ports = c.nodes().iter().map(|n| n.port()).collect();
        runs.push((
            format!("3, {partitions} parts"),
            c.url(),
            ports,
            0,
            partitions,
            Box::new(c),
        ));
    }
    // With a replica per master, without and with replica acknowledgements (WAIT 1 per batch).
    for acks in [0usize, 1] {
        let c = kiq_testkit::RedisCluster::start(3, 1)?;
        let ports = c.nodes().iter().map(|n| n.port()).collect();
        runs.push((
            format!("3+3 acks {acks}"),
            c.url(),
            ports,
            acks,
            1,
            Box::new(c),
        ));
    }
    for (name, url, ports, acks, partitions, _keep) in &runs {
        let mut nodes = Vec::new();
        for p in ports {
            nodes.push(
                redis::Client::open(format!("redis://127.0.0.1:{p}"))?
                    .get_multiplexed_async_connection()
                    .await?,
            );
        }
        let mut before = Vec::new();
        for c in &mut nodes {
            before.push((redis_cpu(c).await?, command_calls(c).await?));
        }
        let b = Broker::from_config(
            BrokerConfig::new(url.as_str())
                .prefix("kiqbench-topo")
                .replica_acks(*acks),
        )
        .await?;
        let (_, layout) = b.inspector().set_partitions("bench", *partitions).await?;
        let t = Instant::now();
        let mut left = n;
        while left > 0 {
            let k = left.min(10_000);
            bench::noop::kiq_many(&b, (0..k).map(|_| ())).await?;
            left -= k;
        }
        let enqueue = n as f64 / t.elapsed().as_secs_f64();
        let mut poll = kiq::broker::connect_redis(url).await?;
        let streams: Vec<String> = layout
            .names
            .iter()
            .map(|q| format!("{{kiqbench-topo:{q}}}:stream"))
            .collect();
        let t = Instant::now();
        std::env::set_var("KIQ_REPLICA_ACKS", acks.to_string());
        let workers = Workers::start(&taskctl, url, "kiqbench-topo", 2)?;
        std::env::remove_var("KIQ_REPLICA_ACKS");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let mut left = 0;
            for stream in &streams {
                let (len, pending): (u64, Vec<redis::Value>) = redis::pipe()
                    .cmd("XLEN")
                    .arg(stream)
                    .cmd("XPENDING")
                    .arg(stream)
                    .arg("kiq")
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .query_async(&mut poll)
                    .await?;
                left += len + pending.len() as u64;
            }
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("drain of {n} tasks did not finish in 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drain = n as f64 / t.elapsed().as_secs_f64();
        workers.stop();
        let mut per_node = Vec::new();
        for (c, (cpu0, calls0)) in nodes.iter_mut().zip(&before) {
            let cpu = (redis_cpu(c).await? - cpu0) * 1e6 / n as f64;
            let calls: u64 = delta(&command_calls(c).await?, calls0)
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "xlen" | "xpending" | "info" | "cluster"))
                .map(|(_, v)| v)
                .sum();
            per_node.push((cpu, calls));
        }
        let total_cpu: f64 = per_node.iter().map(|(c, _)| c).sum();
        let total_calls: u64 = per_node.iter().map(|(_, k)| k).sum::<u64>().max(1);
        let nodes_text: Vec<String> = per_node
            .iter()
            .map(|(cpu, calls)| {
                format!(
                    "{cpu:.1} µs {:.0} %",
                    100.0 * *calls as f64 / total_calls as f64
                )
            })
            .collect();
        println!(
            "{name:<10} {enqueue:>12.0} {drain:>12.0} {total_cpu:>14.1}  {}",
            nodes_text.join(" | ")
        );
    }
    Ok(())
}

/// `samples` sequential round trips; milliseconds, sorted.
async fn latencies(b: &Broker, samples: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        bench::noop::kiq(b)
            .await?
            .wait_result(Duration::from_secs(30))
            .await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn tokio_util_stop() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

/// Sends `rate` tasks per second in batches every 10 ms until `stop`; returns how many it sent.
async fn background_load(
    b: Broker,
    rate: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<u64> {
    let per_tick = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        bench::noop::kiq_many(&b, (0..per_tick).map(|_| ())).await?;
        sent += per_tick as u64;
    }
    Ok(sent)
}

/// `taskctl worker` processes for one measurement.
struct Workers {
    child: Child,
}

impl Workers {
    fn start(
        taskctl: &std::path::Path,
        url: &str,
        prefix: &str,
        procs: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(taskctl, url, prefix, procs, &[])
    }

    /// Like [`Workers::start`], with more `taskctl worker` flags.
    fn start_with(
        taskctl: &std::path::Path,
        url: &str,
        prefix: &str,
        procs: usize,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let child = Command::new(taskctl)
            .args([
                "worker",
                "--queues",
                "bench",
                "--concurrency",
                "256",
                "--prefetch",
                "512",
            ])
            .args([
                "--workers",
                &procs.to_string(),
                "--redis-url",
                url,
                "--prefix",
                prefix,
            ])
            .args(extra)
            .env("KIQ_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting taskctl worker")?;
        let w = Self { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.children().len() < procs {
            if Instant::now() > deadline {
                bail!("worker processes did not start");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(w)
    }

    fn children(&self) -> Vec<i32> {
        let parent = self.child.id() as i32;
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .ok()
                            .and_then(|s| {
                                let rest = s.rsplit_once(')')?.1.to_string();
                                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                            })
                            == Some(parent)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// CPU seconds (user + system) the worker processes have used so far.
    fn cpu_seconds(&self) -> f64 {
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as f64;
        self.children()
            .into_iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // Fields after the command: state is 0, utime 11, stime 12.
                let rest = stat.rsplit_once(')')?.1.to_string();
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
            })
            .sum::<f64>()
            / tick
    }

    fn status_kb(&self, field: &str) -> Vec<u64> {
        self.children()
            .into_iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .collect()
    }

    fn rss_kb(&self) -> Vec<u64> {
        self.status_kb("VmRSS:")
    }

    fn peak_rss_kb(&self) -> Vec<u64> {
        self.status_kb("VmHWM:")
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
