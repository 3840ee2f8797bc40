//! The worker supervisor: N processes, restarts, graceful stop, and 10,000 tasks through two.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kiq_examples::math;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{alive, redis_and_broker, wait_until, Workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_through_two_worker_processes() {
    let (redis, broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 2, &["--concurrency", "64"]);
    const N: i64 = 10_000;
    let started = Instant::now();
    let handles = math::add::kiq_many(&broker, (0..N).map(|i| (i, 2 * i)))
        .await
        .expect("enqueue");
    let enqueued = started.elapsed();
    let mut waits = tokio::task::JoinSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        waits.spawn(async move { (i as i64, h.wait_result(Duration::from_secs(120)).await) });
    }
    let mut seen = 0;
    while let Some(r) = waits.join_next().await {
        let (i, result) = r.expect("join");
        assert_eq!(result.expect("result"), 3 * i, "task {i}");
        seen += 1;
    }
    assert_eq!(seen, N);
    println!(
        "10,000 tasks: enqueued in {enqueued:?}, all results checked after {:?}",
        started.elapsed()
    );
    // Both processes did work (records say which consumer ran each task).
    let mut consumers = HashSet::new();
    for i in 0..200 {
        let h = math::add::kiq(&broker, i, 0).await.unwrap();
        h.wait_result(Duration::from_secs(30)).await.unwrap();
        if let Some(w) = h.record().await.unwrap().and_then(|r| r.worker) {
            consumers.insert(w);
        }
    }
    assert_eq!(
        consumers.len(),
        2,
        "expected both workers to run tasks: {consumers:?}"
    );
    assert!(workers.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_is_restarted() {
    let (redis, broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 2, &[]);
    let before = workers.children();
    assert_eq!(before.len(), 2);
    kill(Pid::from_raw(before[0]), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = workers.children();
            now.len() == 2 && !now.contains(&before[0])
        }),
        "no replacement for the killed worker; log:\n{}",
        workers.log_text()
    );
    assert!(workers.log_text().contains("restarting worker process"));
    let h = math::add::kiq(&broker, 4, 5).await.unwrap();
    assert_eq!(h.wait_result(Duration::from_secs(20)).await.unwrap(), 9);
    assert!(workers.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_worker_process() {
    let (redis, _broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 3, &["--shutdown-timeout", "5s"]);
    let children = workers.children();
    assert_eq!(children.len(), 3);
    let status = workers.stop();
    assert!(status.success(), "{status:?}");
    for c in children {
        assert!(
            wait_until(Duration::from_secs(5), || !alive(c)),
            "worker {c} outlived its supervisor"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_with_a_sigkilled_supervisor() {
    let (redis, _broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 2, &[]);
    let children = workers.children();
    kill(Pid::from_raw(workers.pid()), Signal::SIGKILL).unwrap();
    for c in children {
        assert!(
            wait_until(Duration::from_secs(10), || !alive(c)),
            "worker {c} kept running without its supervisor"
        );
    }
}

#[test]
fn the_cli_lists_its_tasks_and_refuses_bad_input() {
    let out = std::process::Command::new(support::taskctl())
        .arg("tasks")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kiq_examples::math::add"), "{text}");
    assert!(text.contains("math.stats"), "{text}");

    let bad = std::process::Command::new(support::taskctl())
        .args([
            "kiq",
            "x",
            "--args",
            "{not json",
            "--redis-url",
            "redis://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--args must be JSON"));

    let bad_url = std::process::Command::new(support::taskctl())
        .args(["result", "abc", "--redis-url", "http://nope"])
        .output()
        .unwrap();
    assert!(!bad_url.status.success());
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("invalid Redis URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_queues_and_workers_and_forgets_workers_that_left() {
    let (redis, broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 2, &[]);
    let status = || {
        let out = std::process::Command::new(support::taskctl())
            .args(["status", "--json", "--redis-url", &redis.url()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(wait_until(Duration::from_secs(10), || status()["workers"]
        .as_array()
        .is_some_and(|w| w.len() == 2)));
    let h = kiq_examples::faults::nap::kiq(&broker, 1500).await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        status()["queues"].as_array().is_some_and(|qs| {
            qs.iter()
                .any(|q| q["queue"] == "default" && q["in_flight"] == 1)
        })
    }));
    h.wait_result(Duration::from_secs(20)).await.unwrap();
    assert!(workers.stop().success());
    assert_eq!(status()["workers"].as_array().map(Vec::len), Some(0));
    assert!(status()["scheduler"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_dispatches_with_a_priority_and_shows_a_task() {
    let (redis, broker) = redis_and_broker().await;
    let run = |args: &[&str]| {
        let out = support::taskctl_at(&redis.url(), args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    // No worker yet: the message waits in the queue's high lane.
    let (code, id) = run(&[
        "kiq",
        "kiq_examples::math::add",
        "--args",
        "[40, 2]",
        "--priority",
        "high",
    ]);
    assert_eq!(code, Some(0));
    assert!(redis
        .command("XLEN {kiq:default}:high:stream")
        .unwrap()
        .contains(":1"));
    let _w = Workers::start(&redis.url(), 1, &[]);
    broker
        .wait_record(&id, Duration::from_secs(20))
        .await
        .unwrap();
    let (code, json) = run(&["task", &id, "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["output"], 42);
    assert_eq!(v["queue"], "default");
    assert_eq!(v["attempts"], 1);
    let (_, table) = run(&["task", &id]);
    assert!(
        table.contains("succeeded") && table.contains("42"),
        "{table}"
    );
    let (code, _) = run(&["task", "no-such-task"]);
    assert_eq!(code, Some(2));
    let (code, _) = run(&["kiq", "x", "--priority", "urgent"]);
    assert_eq!(code, Some(2));
    // A name no live worker runs is refused with the names they run (it used to print an id
    // and exit 0, and the task then dead-lettered as unknown); --force sends it anyway.
    let out = support::taskctl_at(&redis.url(), &["kiq", "no_such::task", "--args", "[]"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no live worker runs a task named") && err.contains("kiq_examples::math::add"),
        "{err}"
    );
    let (code, forced) = run(&["kiq", "no_such::task", "--args", "[]", "--force"]);
    assert_eq!(code, Some(0));
    assert_eq!(forced.len(), 32, "{forced}");
    // A delay past ten years is refused; it once wrapped around to a task due in 47 minutes.
    let out = support::taskctl_at(
        &redis.url(),
        &[
            "kiq",
            "kiq_examples::math::add",
            "--args",
            "[1,2]",
            "--delay",
            "18446744073709551615s",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("10 years"), "{err}");
    // Bad input exits 2: an id that is no dead-letter id (purge said "purged 0" and exited 0),
    // and waiting on an unknown task (exited 1, as if it had failed).
    let (code, _) = run(&["dead", "purge", "notanid"]);
    assert_eq!(code, Some(2));
    let (code, _) = run(&["dead", "replay", "notanid"]);
    assert_eq!(code, Some(2));
    let (code, out) = run(&["wait", "no-such-task", &id, "--timeout", "20s"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("1 unknown"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_on_many_tasks() {
    use std::io::Write;
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 1, &[]);
    let hs = kiq_examples::math::add::kiq_many(&broker, (0..25).map(|i| (i, 1)))
        .await
        .unwrap();
    let mut child = std::process::Command::new(support::taskctl())
        .args([
            "wait",
            "-",
            "--json",
            "--timeout",
            "30s",
            "--redis-url",
            &redis.url(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ids: String = hs.iter().map(|h| format!("{}\n", h.id())).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ids.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 25);
    assert!(lines.iter().all(|l| l["state"] == "succeeded"));

    let bad = kiq_examples::faults::flaky::kiq(&broker, "no".into())
        .await
        .unwrap();
    let out = std::process::Command::new(support::taskctl())
        .args(["wait", bad.id(), hs[0].id(), "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 succeeded, 1 failed"));
}
