//! The scheduler on real Redis: replicas and the lease, exactly-once ticks, runtime management,
//! and the seed use cases (a daily job in Asia/Kolkata; a table of scheduled tasks).

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiq::{ScheduleDef, Schedules};
use kiq_examples::{attendance, maintenance, math};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{redis_and_broker, wait_until, RedisServer, Workers};

/// A scheduler process, killed if the test ends (or panics) before [`stop`].
struct Scheduler(Child);

impl std::ops::Deref for Scheduler {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Scheduler {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scheduler(url: &str, extra: &[&str]) -> Scheduler {
    Scheduler(
        Command::new(support::taskctl())
            .args(["scheduler", "--redis-url", url])
            .args(extra)
            .env("KIQ_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn stop(mut c: Scheduler) {
    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    if support::wait_exit(&mut c, Duration::from_secs(20)).is_none() {
        let _ = c.kill();
    }
}

fn taskctl(redis: &RedisServer, args: &[&str]) -> (bool, String, String) {
    let out = support::taskctl_at(&redis.url(), args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Task ids of everything enqueued on `queue`, in stream order.
async fn enqueued_ids(url: &str, queue: &str) -> Vec<String> {
    let mut conn = kiq::broker::connect_redis(url).await.unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{{kiq:{queue}}}:stream"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .filter_map(|e| match e.map.get("data") {
            Some(redis::Value::BulkString(b)) => {
                kiq::broker::codec::decode::<kiq::broker::Envelope>(b).ok()
            }
            _ => None,
        })
        .map(|env| env.id)
        .collect()
}

fn lease_holder_pid(redis: &RedisServer) -> Option<i32> {
    let v = redis.command("GET {kiq}:scheduler:lease").ok()?;
    // "$len\r\nhost-PID-rand TOKEN\r\n"
    let line = v.lines().nth(1)?;
    let holder = line.split(' ').next()?;
    let mut parts = holder.rsplitn(3, '-');
    let _rand = parts.next()?;
    parts.next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_every_second_fires_exactly_once_across_a_sigkill() {
    let (redis, broker) = redis_and_broker().await;
    let mut def = ScheduleDef::new("tick", math::add::SPEC.name, "@every 1s");
    def.args = serde_json::json!([1, 2]);
    Schedules::new(&broker).put(def).await.unwrap();
    let mut replicas: Vec<Scheduler> = (0..3)
        .map(|_| scheduler(&redis.url(), &["--lease-ttl", "2s"]))
        .collect();
    let count = || async { enqueued_ids(&redis.url(), "default").await.len() };
    let t0 = Instant::now();
    while count().await < 4 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no ticks fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL the active replica.
    let active = lease_holder_pid(&redis).expect("a lease holder");
    let idx = replicas
        .iter()
        .position(|c| c.id() as i32 == active)
        .expect("active is ours");
    let mut victim = replicas.remove(idx);
    victim.kill().unwrap();
    let _ = victim.wait();
    let killed = Instant::now();
    let before = count().await;
    assert!(wait_until(Duration::from_secs(10), || lease_holder_pid(
        &redis
    )
    .is_some_and(|p| p != active)));
    let takeover = killed.elapsed();
    let t1 = Instant::now();
    while count().await < before + 5 {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "no ticks after takeover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in replicas {
        stop(r);
    }
    let ids = enqueued_ids(&redis.url(), "default").await;
    let mut per_tick: BTreeMap<u64, usize> = BTreeMap::new();
    for id in &ids {
        let tick: u64 = id
            .strip_prefix("s:tick:")
            .and_then(|t| t.parse().ok())
            .expect("fire id");
        *per_tick.entry(tick).or_default() += 1;
    }
    let dupes: usize = per_tick.values().map(|n| n - 1).sum();
    let ticks: Vec<u64> = per_tick.keys().copied().collect();
    let gaps = ticks.windows(2).filter(|w| w[1] - w[0] != 1000).count();
    println!(
        "scheduler: {} ticks over {} s, {dupes} duplicates, {gaps} gaps; takeover {takeover:?} after SIGKILL (lease ttl 2s)",
        ticks.len(),
        (ticks.last().unwrap() - ticks.first().unwrap()) / 1000 + 1
    );
    assert_eq!(dupes, 0, "a tick fired twice");
    assert_eq!(gaps, 0, "a tick was missed: {ticks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_managed_at_run_time_from_the_cli() {
    let (redis, _broker) = redis_and_broker().await;
    let sched = scheduler(&redis.url(), &["--lease-ttl", "2s"]);
    let (ok, _, err) = taskctl(
        &redis,
        &[
            "schedule",
            "add",
            "bad",
            "--task",
            "x",
            "--cron",
            "61 * * * *",
        ],
    );
    assert!(!ok && err.contains("invalid schedule"), "{err}");
    let (ok, _, err) = taskctl(
        &redis,
        &[
            "schedule",
            "add",
            "bad",
            "--task",
            "x",
            "--cron",
            "0 0 * * *",
            "--tz",
            "Nowhere/City",
        ],
    );
    assert!(!ok && err.contains("unknown time zone"), "{err}");

    let name = math::add::SPEC.name;
    let (ok, out, err) = taskctl(
        &redis,
        &[
            "schedule",
            "add",
            "fast",
            "--task",
            name,
            "--cron",
            "@every 1s",
            "--args",
            "[2, 2]",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("next fire"), "{out}");
    let fires = || async {
        enqueued_ids(&redis.url(), "default")
            .await
            .iter()
            .filter(|i| i.starts_with("s:fast:"))
            .count()
    };
    let t = Instant::now();
    while fires().await < 2 {
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(taskctl(&redis, &["schedule", "pause", "fast"]).0);
    tokio::time::sleep(Duration::from_millis(600)).await; // let a pass in flight finish
    let paused_at = fires().await;
    // Nothing fires while paused: the event here is an absence, so this waits out two ticks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fires().await, paused_at, "fired while paused");
    assert!(taskctl(&redis, &["schedule", "resume", "fast"]).0);
    let t = Instant::now();
    while fires().await < paused_at + 1 {
        assert!(t.elapsed() < Duration::from_secs(20), "did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Resuming does not replay the paused period.
    assert!(fires().await <= paused_at + 3);

    let (ok, out, _) = taskctl(&redis, &["schedule", "trigger", "fast"]);
    assert!(ok && out.starts_with("s:fast:manual:"), "{out}");
    let (ok, out, _) = taskctl(&redis, &["schedule", "show", "fast"]);
    assert!(ok, "{out}");
    for field in [
        "last_fire_ms",
        "next_fire",
        "recent_fires",
        "\"enabled\": true",
    ] {
        assert!(out.contains(field), "{field} missing in {out}");
    }
    let (ok, out, _) = taskctl(&redis, &["schedule", "list"]);
    assert!(ok && out.contains("fast"), "{out}");
    let (ok, out, _) = taskctl(&redis, &["schedule", "leader"]);
    assert!(ok && out.contains("token"), "{out}");
    assert!(taskctl(&redis, &["schedule", "rm", "fast"]).0);
    assert!(!taskctl(&redis, &["schedule", "show", "fast"]).0);
    stop(sched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_daily_attendance_at_half_past_midnight_in_kolkata_is_idempotent() {
    let (redis, broker) = redis_and_broker().await;
    let env = [("KIQ_REDIS_URL", redis.url())];
    let _workers = Workers::start_env(&redis.url(), 1, &[], &[(env[0].0, env[0].1.as_str())]);
    redis.command("SADD demo:members asha ben chen").unwrap();
    let run = |date: &str| {
        let b = broker.clone();
        let date = date.to_string();
        async move {
            attendance::attendance_for::kiq(&b, date)
                .await
                .unwrap()
                .wait_result(Duration::from_secs(30))
                .await
                .unwrap()
        }
    };
    let first = run("2026-11-02").await;
    assert_eq!((first.created, first.summaries), (3, 3));
    let again = run("2026-11-02").await;
    assert_eq!(again.created, 0, "a rerun creates nothing");
    assert!(redis
        .command("HLEN demo:attendance:2026-11-02")
        .unwrap()
        .contains(":3"));
    // Someone was present on the 1st and the 2nd: the summary counts both, however often it runs.
    redis
        .command("HSET demo:attendance:2026-11-01 asha present")
        .unwrap();
    redis
        .command("HSET demo:attendance:2026-11-02 asha present")
        .unwrap();
    run("2026-11-02").await;
    run("2026-11-02").await;
    assert!(redis
        .command("HGET demo:summary:2026-11 asha")
        .unwrap()
        .contains('2'));

    // The scheduled form: declared on the task, fires at 00:30 IST = 19:00 UTC.
    let sched = scheduler(&redis.url(), &[]);
    let id = "task.kiq_examples.attendance.daily_attendance";
    assert!(wait_until(Duration::from_secs(20), || taskctl(
        &redis,
        &["schedule", "show", id]
    )
    .0));
    let (_, out, _) = taskctl(&redis, &["schedule", "show", id]);
    assert!(
        out.contains("Asia/Kolkata") && out.contains("30 0 * * *"),
        "{out}"
    );
    assert!(
        out.contains("T19:00:00+00:00"),
        "next fire should be 19:00 UTC: {out}"
    );
    stop(sched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_002_004_a_table_of_scheduled_tasks_managed_at_run_time() {
    let (redis, broker) = redis_and_broker().await;
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-schedule-table"))
        .env("KIQ_REDIS_URL", redis.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("4 schedules loaded"), "{text}");
    let store = Schedules::new(&broker);
    let sync = store.get("sync_external_data").await.unwrap().unwrap();
    assert!(!sync.enabled);
    assert_eq!((sync.retries, sync.timeout_secs), (Some(3), Some(1800)));

    // Managed at run time: a fast health check with its own retries and timeout, then paused.
    let mut hc = ScheduleDef::new(
        "health_fast",
        maintenance::health_check::SPEC.name,
        "*/1 * * * * *",
    );
    hc.retries = Some(1);
    hc.timeout_secs = Some(5);
    store.put(hc).await.unwrap();
    let _workers = Workers::start(&redis.url(), 1, &[]);
    let sched = scheduler(&redis.url(), &["--lease-ttl", "2s"]);
    let t = Instant::now();
    let mut done = 0;
    while done < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "health checks did not run"
        );
        let status = store.status("health_fast").await.unwrap();
        done = 0;
        for id in status.recent_fires {
            if let Ok(Some(r)) = broker.record(&id).await {
                if r.state == kiq::TaskState::Succeeded {
                    done += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The disabled row never fired; re-loading the table keeps an operator's pause.
    assert!(store
        .status("sync_external_data")
        .await
        .unwrap()
        .recent_fires
        .is_empty());
    store.set_enabled("health_check", false).await.unwrap();
    maintenance::load_table(&broker, maintenance::TASK_DEFINITIONS)
        .await
        .unwrap();
    assert!(!store.get("health_check").await.unwrap().unwrap().enabled);
    stop(sched);
}

/// Tick times of schedule `id`'s recent fires (fire ids are `s:<id>:<tick ms>`).
async fn fired_ticks(store: &Schedules, id: &str) -> Vec<u64> {
    let prefix = format!("s:{id}:");
    store
        .status(id)
        .await
        .map(|s| {
            s.recent_fires
                .iter()
                .filter_map(|f| f.strip_prefix(&prefix)?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A schedule enabled again by replacing its whole definition (GET, edit, PUT: what an API
/// client does) owes nothing for the pause, as `resume` never did. It once replayed every tick
/// missed while paused (11 fires after a 10 s pause). Expressions that never fire, and task
/// names the binary does not link, are refused by `schedule add`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_a_schedule_by_replacing_it_does_not_replay_the_pause() {
    let (redis, broker) = redis_and_broker().await;
    let store = Schedules::new(&broker);
    let _sched = scheduler(&redis.url(), &["--lease-ttl", "2s"]);
    let mut def = ScheduleDef::new("tick", math::add::SPEC.name, "@every 1s");
    def.args = serde_json::json!([1, 2]);
    store.put(def).await.unwrap();
    let now_ms = kiq::broker::envelope::now_ms;
    let started = now_ms();
    let mut seen = false;
    for _ in 0..200 {
        if fired_ticks(&store, "tick")
            .await
            .iter()
            .any(|t| *t > started)
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the schedule never fired");
    store.set_enabled("tick", false).await.unwrap();
    let paused_at = now_ms();
    // The pause itself: ticks fall due meanwhile, and are not owed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut d = store.get("tick").await.unwrap().unwrap();
    d.enabled = true;
    let resumed_at = now_ms();
    store.put(d).await.unwrap();
    let mut after = false;
    for _ in 0..200 {
        if fired_ticks(&store, "tick")
            .await
            .iter()
            .any(|t| *t > resumed_at)
        {
            after = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after, "no tick after the schedule was enabled again");
    // Allow a tick decided as the pause began, and one as it ended.
    let fired = fired_ticks(&store, "tick").await;
    let in_pause: Vec<&u64> = fired
        .iter()
        .filter(|t| **t > paused_at + 2_000 && **t < resumed_at - 1_000)
        .collect();
    assert!(
        in_pause.is_empty(),
        "ticks of the pause fired: {in_pause:?} of {fired:?}"
    );

    for (args, wanted) in [
        (
            vec!["--task", math::add::SPEC.name, "--cron", "0 0 31 2 *"],
            "never fire",
        ),
        (
            vec![
                "--task",
                math::add::SPEC.name,
                "--cron",
                "@at 2001-01-01T00:00:00Z",
            ],
            "never fire",
        ),
        (
            vec!["--task", "kiq_examples::math::ad", "--cron", "@daily"],
            "no task named",
        ),
    ] {
        let mut all = vec!["schedule", "add", "mistake"];
        all.extend(args);
        let (ok, _, err) = taskctl(&redis, &all);
        assert!(!ok && err.contains(wanted), "{all:?}: {err}");
    }
    let (ok, _, err) = taskctl(
        &redis,
        &[
            "schedule",
            "add",
            "elsewhere",
            "--task",
            "other_service::task",
            "--cron",
            "@daily",
            "--force",
        ],
    );
    assert!(ok, "{err}");
}
