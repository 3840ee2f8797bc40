//! What only a Redis Cluster or Sentinel can do to kiq: a plain URL that reaches a cluster
//! node, a primary SIGKILLed and its replica promoted mid-run, the control slot's primary and a
//! scheduler replica killed together, slots migrated under load, a Sentinel failover
//! (producers, workers, waiters and the scheduler follow the new primary). Each test starts its
//! own topology from `redis-server` (whatever `KIQ_TEST_TOPOLOGY` says; the parametrised suites
//! cover the rest).

mod support;

use std::time::{Duration, Instant};

use kiq::{Broker, BrokerConfig, TaskHandle};
use kiq_examples::faults;
use kiq_testkit::{RedisCluster, RedisOptions, RedisSentinels};
use support::{wait_until, Workers};

/// Waits for every handle; returns how many succeeded and the errors of the others.
async fn wait_all(handles: Vec<TaskHandle<u64>>, timeout: Duration) -> (usize, Vec<String>) {
    let mut waits = tokio::task::JoinSet::new();
    for h in handles {
        waits.spawn(async move { h.wait_result(timeout).await });
    }
    let (mut ok, mut errors) = (0, Vec::new());
    while let Some(r) = waits.join_next().await {
        match r.expect("waiter task") {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    (ok, errors)
}

/// How many tasks of the failover run have left their side effect.
fn tallied(cluster: &RedisCluster) -> u64 {
    cluster
        .command("HLEN failover")
        .map(|r| r.trim_start_matches(':').trim().parse::<u64>().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn a_plain_url_to_a_cluster_node_fails_fast_naming_the_cluster_form() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let plain = format!("redis://127.0.0.1:{}", cluster.nodes()[0].port());
    let started = Instant::now();
    let out = support::taskctl_at(
        &plain,
        &["kiq", "kiq_examples::math::add", "--args", "[1,2]"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("redis+cluster://"), "{err}");
    // The worker says so and stops, rather than retrying forever.
    let out = std::process::Command::new(support::taskctl())
        .args(["worker", "--workers", "1", "--redis-url", &plain])
        .env("KIQ_LOG", "info")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("redis+cluster://"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_cluster_primary_sigkilled_and_replica_promoted_loses_nothing() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let url = cluster.url();
    let broker = Broker::from_config(BrokerConfig::new(&url).replica_acks(1))
        .await
        .unwrap();
    let w = Workers::start_env(
        &url,
        2,
        &["--replica-acks", "1", "--visibility-timeout", "3s"],
        &[("KIQ_REDIS_URL", &url)],
    );
    const N: u64 = 400;
    let handles = faults::tally::kiq_many(&broker, (0..N).map(|n| ("failover".to_string(), n, 5)))
        .await
        .unwrap();
    // Kill the primary of the queue's slot mid-run; its replica takes over.
    let victim = cluster.index_for("{kiq:default}:stream").unwrap();
    assert!(wait_until(Duration::from_secs(60), || cluster
        .command("HLEN failover")
        .map(|r| r.trim_start_matches(':').trim().parse::<u64>().unwrap_or(0) > N / 4)
        .unwrap_or(false)));
    let killed = Instant::now();
    cluster.node_mut(victim).kill();
    // Its replica is promoted once the others have timed the primary out.
    assert!(wait_until(Duration::from_secs(30), || cluster
        .index_for("{kiq:default}:stream")
        .is_ok_and(|i| i != victim)));
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    println!(
        "cluster failover: replica promoted {:?} after the kill",
        killed.elapsed()
    );
    // With replica acknowledgements on, writes wait for a replica: the old primary comes back
    // as the new one's replica (until then, batches fail and are retried: nothing is lost).
    cluster.node_mut(victim).restart().unwrap();
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    cluster
        .wait_replicas_synced(Duration::from_secs(30))
        .unwrap();
    // Workers resume on their own: tasks finish again within the node timeout (1.5 s) plus a
    // margin of the workers' reconnect backoff, counted from when the cluster is whole again.
    let whole = Instant::now();
    let done_then = tallied(&cluster);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = tallied(&cluster);
            now > done_then || now == N
        }),
        "no task finished in the 20 s after the cluster was whole again"
    );
    println!(
        "cluster failover: workers finished tasks again {:?} after the cluster was whole",
        whole.elapsed()
    );
    let (ok, errors) = wait_all(handles, Duration::from_secs(120)).await;
    let counts = support::parse_tallies(&cluster.command("HGETALL failover").unwrap());
    let executions: u64 = counts.values().sum();
    let lost = (0..N).filter(|n| !counts.contains_key(n)).count();
    println!(
        "cluster failover: {N} tasks, {ok} results, {} waiter errors, {lost} without a side \
         effect, {} duplicate executions, finished {:?} after the kill",
        errors.len(),
        executions.saturating_sub(N - lost as u64),
        killed.elapsed()
    );
    let log = w.log_text();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        errors.is_empty(),
        "{:?}; worker log tail:\n{}",
        &errors[..errors.len().min(3)],
        tail.join("\n")
    );
    assert_eq!(ok, N as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrated_under_load_lose_nothing_and_no_waiter_hangs() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let url = cluster.url();
    let broker = Broker::connect(&url).await.unwrap();
    const N: u64 = 300;
    let handles = faults::tally::kiq_many(&broker, (0..N).map(|n| ("moved".to_string(), n, 20)))
        .await
        .unwrap();
    let moved_tasks: Vec<String> = handles.iter().take(5).map(|h| h.id().to_string()).collect();
    // The waiters subscribe before anything runs.
    let waiters = tokio::spawn(wait_all(handles, Duration::from_secs(120)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _w = Workers::start_env(&url, 2, &[], &[("KIQ_REDIS_URL", &url)]);
    assert!(wait_until(Duration::from_secs(60), || cluster
        .command("HLEN moved")
        .map(|r| r.trim_start_matches(':').trim().parse::<u64>().unwrap_or(0) > 20)
        .unwrap_or(false)));
    // Move the queue's slot, then the slots of five waited-on tasks, while tasks run.
    let queue_key = "{kiq:default}:stream";
    let to = (cluster.index_for(queue_key).unwrap() + 1) % 3;
    cluster.migrate_slot_of(queue_key, to).unwrap();
    for id in &moved_tasks {
        let key = format!("{{kiq:t:{id}}}");
        let to = (cluster.index_for(&key).unwrap() + 1) % 3;
        cluster.migrate_slot_of(&key, to).unwrap();
    }
    let (ok, errors) = waiters.await.unwrap();
    let counts = support::parse_tallies(&cluster.command("HGETALL moved").unwrap());
    let executions: u64 = counts.values().sum();
    println!(
        "slot migration: {N} tasks, {ok} results, {} duplicate executions",
        executions.saturating_sub(N)
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ok, N as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_sentinel_primary_killed_everything_follows_the_new_primary() {
    let mut set = RedisSentinels::start_with(RedisOptions::default()).unwrap();
    let url = set.url();
    let broker = Broker::from_config(BrokerConfig::new(&url).replica_acks(1))
        .await
        .unwrap();
    let _w = Workers::start_env(
        &url,
        2,
        &["--replica-acks", "1", "--visibility-timeout", "3s"],
        &[("KIQ_REDIS_URL", &url)],
    );
    // A scheduler too, firing every second: it must go on firing on the new primary.
    let mut def = kiq::ScheduleDef::new("tick", kiq_examples::math::add::SPEC.name, "@every 1s");
    def.args = serde_json::json!([1, 2]);
    kiq::Schedules::new(&broker).put(def).await.unwrap();
    let _scheduler = scheduler(&url);
    const N: u64 = 300;
    let handles = faults::tally::kiq_many(&broker, (0..N).map(|n| ("sentinel".to_string(), n, 10)))
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || set
        .command("HLEN sentinel")
        .map(|r| r.trim_start_matches(':').trim().parse::<u64>().unwrap_or(0) > N / 4)
        .unwrap_or(false)));
    let old = set.primary_port().unwrap();
    let killed = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    set.primary_mut().unwrap().kill();
    assert!(wait_until(Duration::from_secs(30), || set
        .primary_port()
        .is_ok_and(|p| p != old)));
    println!(
        "sentinel failover: new primary named {:?} after the kill",
        killed.elapsed()
    );
    // The old primary comes back as the new one's replica (with replica acknowledgements on,
    // writes wait for one).
    set.restart_stopped().unwrap();
    // Producers follow too: a dispatch after the failover lands on the new primary (the first
    // may meet a connection the failover broke, and says so: the caller retries).
    let mut after = None;
    for _ in 0..50 {
        match faults::tally::kiq(&broker, "sentinel".to_string(), N, 0).await {
            Ok(h) => {
                after = Some(h);
                break;
            }
            Err(e) => {
                println!("dispatch during the failover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let after = after.expect("a dispatch after the failover");
    let mut handles = handles;
    handles.push(after);
    let (ok, errors) = wait_all(handles, Duration::from_secs(120)).await;
    let counts = support::parse_tallies(&set.command("HGETALL sentinel").unwrap());
    let executions: u64 = counts.values().sum();
    println!(
        "sentinel failover: {} tasks, {ok} results, {} duplicate executions, finished {:?} \
         after the kill",
        N + 1,
        executions.saturating_sub(N + 1),
        killed.elapsed()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ok, N as usize + 1);
    // The scheduler fired ticks due after the failover (fire ids are `s:tick:<tick ms>`).
    let newest_tick = || {
        set.command("LRANGE {kiq}:schedule:tick:fires 0 0")
            .ok()
            .and_then(|r| {
                r.lines()
                    .find_map(|l| l.strip_prefix("s:tick:"))
                    .and_then(|t| t.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || newest_tick() > killed_ms + 1000),
        "no tick fired after the failover (newest {})",
        newest_tick()
    );
}

/// The control slot's primary SIGKILLed (and with it, at the same moment, one of two scheduler
/// replicas) while a schedule fires every second: the ticks go on after the failover, and every
/// tick of the run is enqueued exactly once, the ones due during the outage caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_under_the_scheduler_fires_every_tick_once() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let url = cluster.url();
    let broker = Broker::connect(&url).await.unwrap();
    let _w = Workers::start_env(&url, 1, &[], &[("KIQ_REDIS_URL", &url)]);
    let mut def = kiq::ScheduleDef::new("tick", kiq_examples::math::add::SPEC.name, "@every 1s");
    def.args = serde_json::json!([1, 2]);
    kiq::Schedules::new(&broker).put(def).await.unwrap();
    let mut first = scheduler(&url);
    let _second = scheduler(&url);
    assert!(wait_until(Duration::from_secs(30), || fires(&cluster)
        .len()
        >= 3));
    let victim = cluster.index_for("{kiq}:scheduler:lease").unwrap();
    let killed = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    cluster.node_mut(victim).kill();
    let _ = first.0.kill();
    assert!(wait_until(Duration::from_secs(30), || cluster
        .index_for("{kiq}:scheduler:lease")
        .is_ok_and(|i| i != victim)));
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    println!(
        "scheduler under a cluster failover: control slot's replica promoted {:?} after the kill",
        killed.elapsed()
    );
    // Ticks due well after the failover fire, and the 20 newest are one per second, each once:
    // none missed during the outage, none doubled by the replica that took over.
    let after = killed_ms + killed.elapsed().as_millis() as u64 + 3_000;
    assert!(
        wait_until(Duration::from_secs(40), || {
            let f = fires(&cluster);
            f.first().is_some_and(|t| *t > after) && f.len() >= 20
        }),
        "no tick after the failover: {:?}",
        fires(&cluster)
    );
    let mut f = fires(&cluster);
    f.reverse();
    let gaps: Vec<u64> = f.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    println!(
        "scheduler under a cluster failover: ticks {} .. {} (killed at {killed_ms})",
        f[0],
        f[f.len() - 1]
    );
    assert!(
        f[0] < killed_ms,
        "the kept ticks do not span the failover: {f:?}"
    );
    assert!(gaps.iter().all(|g| *g == 1000), "{gaps:?}");
    // The newest tick's task ran.
    let newest: TaskHandle<i64> = broker.handle(format!("s:tick:{}", f[f.len() - 1]));
    assert_eq!(
        newest.wait_result(Duration::from_secs(30)).await.unwrap(),
        3
    );
}

/// Schedule `tick`'s fire times (fire ids are `s:tick:<tick ms>`), newest first, the last 20.
fn fires(cluster: &RedisCluster) -> Vec<u64> {
    cluster
        .command("LRANGE {kiq}:schedule:tick:fires 0 -1")
        .map(|r| {
            r.lines()
                .filter_map(|l| l.trim().strip_prefix("s:tick:"))
                .filter_map(|t| t.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A scheduler replica on `url` (lease TTL 2 s), killed when the test ends.
fn scheduler(url: &str) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(support::taskctl())
            .args(["scheduler", "--redis-url", url, "--lease-ttl", "2s"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A child process killed when the test ends, even when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
