//! Operating queues on real workers: pause and resume (every partition), purge (waiting and
//! delayed tasks recorded as cancelled, held ones left to finish), drain, quiet by signal and
//! through the API, and the throughput history written by the completion batches.

mod support;

use std::time::Duration;

use kiq::{Priority, TaskState};
use kiq_examples::{faults, math};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use support::{redis_and_broker, taskctl_at, wait_for_state, wait_until, ApiServer, Workers};

const WAIT: Duration = Duration::from_secs(30);

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn state_of(broker: &kiq::Broker, id: &str) -> Option<TaskState> {
    broker.record(id).await.unwrap().map(|r| r.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_takes_tasks_runs_none_and_runs_them_once_resumed() {
    let (redis, broker) = redis_and_broker().await;
    // Two partitions: a pause holds both.
    broker
        .inspector()
        .set_partitions("default", 2)
        .await
        .unwrap();
    let w = Workers::start(&redis.url(), 1, &["--queues", "default,other"]);

    // A task running when the pause comes finishes.
    let running = faults::nap::kiq(&broker, 1_500).await.unwrap();
    assert!(wait_for_state(&broker, running.id(), TaskState::Running).await);
    let said = ok(taskctl_at(&redis.url(), &["queue", "pause", "default"]));
    assert!(said.contains("default: paused"), "{said}");
    assert!(
        wait_until(WAIT, || w
            .log_text()
            .contains("queue paused: not reading it")),
        "the worker did not hear of the pause; log:\n{}",
        w.log_text()
    );
    // A task on the other queue ends any read begun before the pause; reads after it leave
    // `default` alone.
    let flush = math::add::kicker()
        .queue("other")
        .kiq(&broker, (0, 0))
        .await
        .unwrap();
    flush.wait_result(WAIT).await.unwrap();
    assert_eq!(running.wait_result(WAIT).await.unwrap(), 1_500);

    // Ids that put three tasks on each partition (the producer picks one from a fixed hash
    // of the id): random ids left both partitions' share to chance.
    let mut per_partition = [0; 2];
    let ids: Vec<String> = (0..)
        .map(|n| format!("held-{n}"))
        .filter(|id| {
            let p = usize::from(kiq::broker::partition::pick(id, 2));
            per_partition[p] += 1;
            per_partition[p] <= 3
        })
        .take(6)
        .collect();
    let mut held = Vec::new();
    for (i, id) in (0..).zip(&ids) {
        held.push(
            math::add::kicker()
                .task_id(id.as_str())
                .kiq(&broker, (i, i))
                .await
                .unwrap(),
        );
    }
    // The worker keeps reading its other queue meanwhile: each of these is a read that did
    // not take `default`'s tasks.
    for i in 0..3 {
        let h = math::add::kicker()
            .queue("other")
            .kiq(&broker, (i, 1))
            .await
            .unwrap();
        assert_eq!(h.wait_result(WAIT).await.unwrap(), i + 1);
    }
    for h in &held {
        assert_eq!(
            state_of(&broker, h.id()).await,
            Some(TaskState::Pending),
            "a task of a paused queue ran"
        );
    }
    let stats = broker.inspector().queue_totals("default").await.unwrap();
    assert!(stats.paused && stats.paused_at_ms.is_some(), "{stats:?}");
    assert_eq!(stats.waiting, 6);
    assert!(ok(taskctl_at(&redis.url(), &["queue", "paused", "--json"]))
        .trim()
        .starts_with("{\"default\":"));

    // Resumed: they run (on both partitions).
    assert!(broker.inspector().resume_queue("default").await.unwrap());
    for (i, h) in held.iter().enumerate() {
        assert_eq!(h.wait_result(WAIT).await.unwrap(), 2 * i as i64);
    }
    let queues: std::collections::BTreeSet<String> = {
        let mut q = std::collections::BTreeSet::new();
        for h in &held {
            q.insert(h.record().await.unwrap().unwrap().queue);
        }
        q
    };
    assert_eq!(queues.len(), 2, "{queues:?}");
    assert!(
        !broker
            .inspector()
            .queue_totals("default")
            .await
            .unwrap()
            .paused
    );
    // Bad names are refused before Redis is asked.
    let bad = taskctl_at(&redis.url(), &["queue", "pause", "no:colons"]);
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_cancels_what_waits_and_leaves_held_tasks_to_finish() {
    let (redis, broker) = redis_and_broker().await;
    let api = ApiServer::start(&redis.url());
    broker.inspector().set_partitions("idle", 2).await.unwrap();
    // Waiting on a queue no worker reads: plain, high priority, delayed, unique.
    let mut gone = Vec::new();
    for i in 0..4 {
        gone.push(
            math::add::kicker()
                .queue("idle")
                .kiq(&broker, (i, i))
                .await
                .unwrap(),
        );
    }
    gone.push(
        math::add::kicker()
            .queue("idle")
            .priority(Priority::High)
            .kiq(&broker, (1, 1))
            .await
            .unwrap(),
    );
    gone.push(
        math::add::kicker()
            .queue("idle")
            .delay(Duration::from_secs(3600))
            .kiq(&broker, (1, 1))
            .await
            .unwrap(),
    );
    let unique = math::add::kicker()
        .queue("idle")
        .unique("report-7", Duration::from_secs(3600))
        .kiq(&broker, (7, 7))
        .await
        .unwrap();
    gone.push(unique);

    // Not without a confirmation, and the refusal says how many would go.
    let (code, body) = api.call("POST", "/api/queues/idle/purge", Some(json!({})));
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["code"], "confirm_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("6 waiting and 1 delayed"),
        "{body}"
    );
    let refused = taskctl_at(&redis.url(), &["queue", "purge", "idle"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let said = ok(taskctl_at(
        &redis.url(),
        &["queue", "purge", "idle", "--yes", "--json"],
    ));
    let said: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    assert_eq!(said["purged"], 7, "{said}");
    for h in &gone {
        let r = h.record().await.unwrap().unwrap();
        assert_eq!(r.state, TaskState::Cancelled, "{r:?}");
        assert!(r
            .history
            .last()
            .unwrap()
            .note
            .as_deref()
            .unwrap()
            .contains("purged"));
        // Its waiter hears it.
        assert!(h.wait_result(WAIT).await.is_err());
    }
    let stats = broker.inspector().queue_totals("idle").await.unwrap();
    assert_eq!((stats.waiting, stats.delayed), (0, 0), "{stats:?}");
    // Listed as cancelled, and the uniqueness key is free again.
    let listed = broker
        .inspector()
        .list_tasks(TaskState::Cancelled, Some("idle"), 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 7);
    let again = math::add::kicker()
        .queue("idle")
        .unique("report-7", Duration::from_secs(3600))
        .kiq(&broker, (7, 7))
        .await
        .unwrap();
    assert_ne!(again.id(), gone.last().unwrap().id());

    // Cancelling waiting tasks by filter: counted first (dry), then cancelled.
    let other_name = math::double::kicker()
        .queue("idle")
        .kiq(&broker, (5,))
        .await
        .unwrap();
    let (code, dry) = api.call(
        "POST",
        "/api/queues/idle/cancel",
        Some(json!({"task": "kiq_examples::math::add", "dry_run": true})),
    );
    assert_eq!(
        (code, &dry["matched"], &dry["cancelled"]),
        (200, &json!(1), &json!(0)),
        "{dry}"
    );
    let (code, done) = api.call(
        "POST",
        "/api/queues/idle/cancel",
        Some(json!({"task": "kiq_examples::math::add"})),
    );
    assert_eq!((code, &done["cancelled"]), (200, &json!(1)), "{done}");
    assert_eq!(
        state_of(&broker, again.id()).await,
        Some(TaskState::Cancelled)
    );
    assert_eq!(
        state_of(&broker, other_name.id()).await,
        Some(TaskState::Pending)
    );
    let (code, _) = api.call(
        "POST",
        "/api/queues/idle/cancel",
        Some(json!({"state": "running"})),
    );
    assert_eq!(code, 400);

    // A worker holding one task (one at a time, nothing read ahead): purge takes what waits
    // behind it, the held one finishes, and drain then finds the queue empty.
    let _w = Workers::start(
        &redis.url(),
        1,
        &["--queues", "busy", "--concurrency", "1", "--prefetch", "0"],
    );
    let held = faults::nap::kicker()
        .queue("busy")
        .kiq(&broker, (1_500,))
        .await
        .unwrap();
    assert!(wait_for_state(&broker, held.id(), TaskState::Running).await);
    let mut behind = Vec::new();
    for _ in 0..3 {
        behind.push(
            faults::nap::kicker()
                .queue("busy")
                .kiq(&broker, (10,))
                .await
                .unwrap(),
        );
    }
    // Not empty yet: drain gives up after its timeout, exit code 1.
    let early = taskctl_at(
        &redis.url(),
        &["queue", "drain", "busy", "--timeout", "300ms"],
    );
    assert_eq!(early.status.code(), Some(1));
    let (code, body) = api.call(
        "POST",
        "/api/queues/busy/purge",
        Some(json!({"confirm": true})),
    );
    assert_eq!((code, &body["purged"]), (200, &json!(3)), "{body}");
    assert_eq!(held.wait_result(WAIT).await.unwrap(), 1_500);
    for h in &behind {
        assert_eq!(state_of(&broker, h.id()).await, Some(TaskState::Cancelled));
    }
    let drained = ok(taskctl_at(
        &redis.url(),
        &["queue", "drain", "busy", "--timeout", "20s"],
    ));
    assert!(drained.contains("busy: empty"), "{drained}");
    let (code, body) = api.call("POST", "/api/queues/busy/drain?timeout_s=5", None);
    assert_eq!((code, &body["empty"]), (200, &json!(true)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_worker_finishes_what_it_holds_and_takes_nothing_new() {
    let (redis, broker) = redis_and_broker().await;
    let api = ApiServer::start(&redis.url());
    let quiet = Workers::start(
        &redis.url(),
        2,
        &[
            "--queues",
            "default",
            "--concurrency",
            "1",
            "--prefetch",
            "0",
        ],
    );
    let naps = [
        faults::nap::kiq(&broker, 2_500).await.unwrap(),
        faults::nap::kiq(&broker, 2_500).await.unwrap(),
    ];
    for n in &naps {
        assert!(wait_for_state(&broker, n.id(), TaskState::Running).await);
    }
    // SIGUSR1 to the supervisor: every process goes quiet (each is waiting for its one slot).
    kill(Pid::from_raw(quiet.pid()), Signal::SIGUSR1).unwrap();
    let pids = quiet.children();
    assert!(wait_until(WAIT, || {
        let (_, stats) = api.call("GET", "/api/stats", None);
        stats["workers"].as_array().is_some_and(|ws| {
            ws.iter()
                .filter(|w| pids.contains(&(w["pid"].as_i64().unwrap_or(0) as i32)))
                .filter(|w| w["quiet"] == true)
                .count()
                == 2
        })
    }));
    let quiet_consumers: Vec<String> = broker
        .inspector()
        .workers(u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|w| w.quiet)
        .map(|w| w.consumer)
        .collect();
    assert_eq!(quiet_consumers.len(), 2);

    // New work, waiting still when the quiet ones' slots free up (one at a time on a fresh
    // worker, 3 s of it), goes to the fresh worker only.
    let fresh = Workers::start(
        &redis.url(),
        1,
        &[
            "--queues",
            "default",
            "--concurrency",
            "1",
            "--prefetch",
            "0",
        ],
    );
    let mut handles = Vec::new();
    for _ in 0..20 {
        handles.push(faults::nap::kiq(&broker, 150).await.unwrap());
    }
    // What the quiet ones held finishes.
    for n in &naps {
        assert_eq!(n.wait_result(WAIT).await.unwrap(), 2_500);
    }
    for h in &handles {
        h.wait_result(WAIT).await.unwrap();
        let worker = h.record().await.unwrap().unwrap().worker.unwrap();
        assert!(
            !quiet_consumers.contains(&worker),
            "a quiet worker ran {}",
            h.id()
        );
    }

    // Quiet through the API (what the dashboard's button does).
    let fresh_pid = fresh.children()[0];
    let consumer = broker
        .inspector()
        .workers(u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.pid as i32 == fresh_pid)
        .unwrap()
        .consumer;
    let (code, body) = api.call("POST", &format!("/api/workers/{consumer}/quiet"), None);
    assert_eq!((code, &body["quiet"]), (200, &json!(true)), "{body}");
    assert!(wait_until(WAIT, || fresh
        .log_text()
        .contains("going quiet: taking no new work")));
    let (code, _) = api.call("POST", "/api/workers/nobody-here/quiet", None);
    assert_eq!(code, 404);
    // Quiet processes still stop cleanly.
    assert!(quiet.stop().success());
    assert!(fresh.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_add_to_the_history_per_queue_and_task_name() {
    let (redis, broker) = redis_and_broker().await;
    let api = ApiServer::start(&redis.url());
    let _w = Workers::start(&redis.url(), 1, &["--queues", "default"]);
    for i in 0..5 {
        math::add::kiq(&broker, i, i)
            .await
            .unwrap()
            .wait_result(WAIT)
            .await
            .unwrap();
    }
    let failed = faults::flaky::kiq(&broker, "no".into()).await.unwrap();
    assert!(failed.wait_result(WAIT).await.is_err());
    let dead = faults::fail_until::kiq(&broker, 9).await.unwrap();
    assert!(dead.wait_result(WAIT).await.is_err());

    let add = "kiq_examples::math::add";
    let (code, h) = api.call("GET", "/api/stats/history?step=60", None);
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["step_s"], 60);
    let points = h["points"].as_array().unwrap();
    assert!(points.len() >= 60, "an hour of minutes: {}", points.len());
    let sum = |section: &str, name: &str, counter: &str| -> u64 {
        points
            .iter()
            .map(|p| p[section][name][counter].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(sum("tasks", add, "succeeded"), 5);
    assert_eq!(sum("tasks", add, "ran"), 5);
    assert_eq!(sum("tasks", "kiq_examples::faults::flaky", "failed"), 1);
    assert_eq!(sum("tasks", "kiq_examples::faults::fail_until", "dead"), 1);
    assert_eq!(
        sum("tasks", "kiq_examples::faults::fail_until", "retried"),
        3
    );
    assert_eq!(sum("queues", "default", "succeeded"), 5);
    assert_eq!(sum("queues", "default", "failed"), 1);
    let hist: u64 = points
        .iter()
        .filter_map(|p| p["tasks"][add]["run_hist"].as_array())
        .flat_map(|a| a.iter().map(|n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(hist, 5);

    let (code, t) = api.call("GET", "/api/stats/tasks?range=24h", None);
    assert_eq!(code, 200, "{t}");
    let rows = t["tasks"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["task"] == name).unwrap().clone();
    assert_eq!(row(add)["succeeded"], 5);
    assert_eq!(row(add)["failure_rate"], 0.0);
    assert!(row(add)["run_p95_ms"].as_u64().is_some());
    let flaky = row("kiq_examples::faults::flaky");
    assert_eq!(flaky["failure_rate"], 1.0);
    assert_eq!(flaky["last_failure"]["id"], failed.id());
    assert_eq!(flaky["last_failure"]["state"], "failed");
    assert_eq!(
        row("kiq_examples::faults::fail_until")["last_failure"]["id"],
        dead.id()
    );

    // Bad ranges are refused with a reason; ranges are cut to what is kept.
    let now = kiq::broker::envelope::now_ms();
    let too_many = format!("/api/stats/history?from={}&step=60", now - 47 * 3_600_000);
    let (code, body) = api.call("GET", &too_many, None);
    assert_eq!(code, 400, "{body}");
    let (code, body) = api.call("GET", "/api/stats/history?from=0&step=86400", None);
    assert_eq!(code, 200);
    assert!(
        body["points"].as_array().unwrap().len() <= 32,
        "{}",
        body["points"]
    );
    let (code, _) = api.call(
        "GET",
        &format!("/api/stats/history?step={}", u64::MAX),
        None,
    );
    assert_eq!(code, 200);
    // A range wholly in the future holds nothing kept.
    let (code, _) = api.call("GET", &format!("/api/stats/history?to={}", u64::MAX), None);
    assert_eq!(code, 400);
    let (code, _) = api.call("GET", "/api/stats/history?from=10&to=5", None);
    assert_eq!(code, 400);
    let (code, _) = api.call("GET", "/api/stats/tasks?range=forever", None);
    assert_eq!(code, 400);
}
