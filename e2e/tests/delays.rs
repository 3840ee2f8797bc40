//! Delayed tasks: `delay(d)` and `at(t)` wait in Redis and start on time, never early.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiq::TaskState;
use kiq_examples::bench;
use support::{redis_and_broker, Workers};

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_wait_in_redis_and_start_on_time() {
    let (redis, broker) = redis_and_broker().await;
    // No worker yet: the tasks wait in the delayed set, scheduled.
    let due = SystemTime::now() + Duration::from_millis(1500);
    let h = bench::stamp::kicker()
        .at(due)
        .kiq(&broker, ())
        .await
        .unwrap();
    assert_eq!(
        h.record().await.unwrap().unwrap().state,
        TaskState::Scheduled
    );
    assert!(redis
        .command("ZCARD {kiq:bench}:delayed")
        .unwrap()
        .contains(":1"));
    assert!(redis
        .command("XLEN {kiq:bench}:stream")
        .unwrap()
        .contains(":0"));

    let _w = Workers::start(&redis.url(), 1, &[]);
    let ran = h.wait_result(Duration::from_secs(30)).await.unwrap();
    assert!(ran >= ms(due), "started {} ms early", ms(due) - ran);
    println!("at(): started {} ms after due", ran - ms(due));

    // Many, each with its own delay, added while the worker sleeps: none early.
    let mut waits = Vec::new();
    for i in 0..60u64 {
        let delay = Duration::from_millis(100 + (i * 37) % 700);
        let due = SystemTime::now() + delay;
        let h = bench::stamp::kicker()
            .delay(delay)
            .kiq(&broker, ())
            .await
            .unwrap();
        waits.push((ms(due), h));
    }
    let mut late = Vec::new();
    for (due, h) in waits {
        let ran = h.wait_result(Duration::from_secs(30)).await.unwrap();
        // Lower bound by design (never early); a 2 ms allowance for the `due` we computed a
        // moment before the producer did.
        assert!(ran + 2 >= due, "started {} ms early", due - ran);
        late.push(ran.saturating_sub(due));
    }
    late.sort();
    println!(
        "delay(): 60 tasks, lateness p50 {} ms, max {} ms",
        late[late.len() / 2],
        late[late.len() - 1]
    );

    // A due time in the past runs at once.
    let h = bench::stamp::kicker()
        .at(SystemTime::now() - Duration::from_secs(5))
        .kiq(&broker, ())
        .await
        .unwrap();
    h.wait_result(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_dispatches_share_one_task_until_it_finishes() {
    let (redis, broker) = redis_and_broker().await;
    let ttl = Duration::from_secs(60);
    let first = kiq_examples::faults::nap::kicker()
        .unique("report:42", ttl)
        .kiq(&broker, (1500,))
        .await
        .unwrap();
    // Pending: a second dispatch with the same key returns the first task.
    let second = kiq_examples::faults::nap::kicker()
        .unique("report:42", ttl)
        .kiq(&broker, (1500,))
        .await
        .unwrap();
    assert_eq!(first.id(), second.id());
    assert!(redis
        .command("XLEN {kiq:default}:stream")
        .unwrap()
        .contains(":1"));
    // Another key is another task.
    let other = kiq_examples::faults::nap::kicker()
        .unique("report:43", ttl)
        .kiq(&broker, (1,))
        .await
        .unwrap();
    assert_ne!(other.id(), first.id());

    let _w = Workers::start(&redis.url(), 1, &[]);
    // Running: still the same task.
    assert!(support::wait_until(Duration::from_secs(10), || redis
        .command("XPENDING {kiq:default}:stream kiq")
        .map(|r| !r.starts_with("*4\r\n:0"))
        .unwrap_or(false)));
    let third = kiq_examples::faults::nap::kicker()
        .unique("report:42", ttl)
        .kiq(&broker, (1500,))
        .await
        .unwrap();
    assert_eq!(third.id(), first.id());
    assert_eq!(
        first.wait_result(Duration::from_secs(30)).await.unwrap(),
        1500
    );
    other.wait_result(Duration::from_secs(30)).await.unwrap();

    // Finished: the key is free again.
    let fourth = kiq_examples::faults::nap::kicker()
        .unique("report:42", ttl)
        .kiq(&broker, (1,))
        .await
        .unwrap();
    assert_ne!(fourth.id(), first.id());
    assert_eq!(
        fourth.wait_result(Duration::from_secs(30)).await.unwrap(),
        1
    );
    // kiq_many refuses a unique key.
    assert!(kiq_examples::faults::nap::kicker()
        .unique("x", ttl)
        .kiq_many(&broker, [(1,), (2,)])
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_tasks_never_run_or_are_stopped() {
    use kiq::{FailureKind, WaitError};
    let (redis, broker) = redis_and_broker().await;
    let env = [("KIQ_REDIS_URL", redis.url())];
    // Pending and delayed, no worker yet: cancelled at once, waiters learn at once.
    let pending = kiq_examples::faults::tally::kiq(&broker, "cancel".into(), 1, 0)
        .await
        .unwrap();
    let delayed = kiq_examples::faults::tally::kicker()
        .delay(Duration::from_millis(300))
        .kiq(&broker, ("cancel".to_string(), 2, 0))
        .await
        .unwrap();
    assert_eq!(
        pending.cancel().await.unwrap(),
        kiq::CancelOutcome::Cancelled
    );
    let out = std::process::Command::new(support::taskctl())
        .args(["cancel", delayed.id(), "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    for h in [&pending, &delayed] {
        match h.wait_result(Duration::from_secs(5)).await {
            Err(WaitError::Failed(f)) => assert_eq!(f.kind, FailureKind::Cancelled),
            other => panic!("expected cancelled, got {other:?}"),
        }
    }
    // A worker then receives them and does not run them.
    let _w = Workers::start_env(
        &redis.url(),
        1,
        &["--cancel-grace", "200ms"],
        &[(env[0].0, env[0].1.as_str())],
    );
    let marker = kiq_examples::faults::tally::kicker()
        .delay(Duration::from_millis(600))
        .kiq(&broker, ("cancel".to_string(), 3, 0))
        .await
        .unwrap();
    marker.wait_result(Duration::from_secs(20)).await.unwrap();
    assert!(
        redis.command("HEXISTS cancel 1").unwrap().contains(":0"),
        "the cancelled pending task ran"
    );
    assert!(
        redis.command("HEXISTS cancel 2").unwrap().contains(":0"),
        "the cancelled delayed task ran"
    );

    // Running: its token fires and it is stopped after the grace period.
    let long = kiq_examples::faults::nap::kiq(&broker, 30_000)
        .await
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || redis
        .command("XPENDING {kiq:default}:stream kiq")
        .map(|r| r.starts_with("*4\r\n:1"))
        .unwrap_or(false)));
    long.cancel().await.unwrap();
    match long.wait_result(Duration::from_secs(10)).await {
        Err(WaitError::Failed(f)) => assert_eq!(f.kind, FailureKind::Cancelled),
        other => panic!("expected cancelled, got {other:?}"),
    }
    // The worker stopped it (nothing left in flight) and goes on.
    assert!(support::wait_until(Duration::from_secs(10), || redis
        .command("XPENDING {kiq:default}:stream kiq")
        .map(|r| r.starts_with("*4\r\n:0"))
        .unwrap_or(false)));
    // A finished task cannot be cancelled.
    assert_eq!(
        marker.cancel().await.unwrap(),
        kiq::CancelOutcome::AlreadyFinished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_reports_progress_to_its_caller() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 1, &[]);
    let h = kiq_examples::faults::crunch::kiq(&broker, 10)
        .await
        .unwrap();
    // Observed mid-run: some steps done, not all.
    let mut seen_partial = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match h.progress::<(u32, u32)>().await.unwrap() {
            Some((done, 10)) if done < 10 => {
                seen_partial = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(seen_partial, "no progress report seen while running");
    assert_eq!(h.wait_result(Duration::from_secs(20)).await.unwrap(), 10);
    assert_eq!(h.progress::<(u32, u32)>().await.unwrap(), Some((10, 10)));
    // Called directly (no worker), the task still runs; reporting is a no-op.
    assert_eq!(kiq_examples::faults::crunch(1).await, Ok(1));
}

/// Task ids that spell other keys' names are tasks like any other (#17): a task `active` after
/// a cancellation was once cancelled too (`kiq:cancel:active` beside the queue's cancel flag),
/// and a task `X:progress` had its record overwritten by X's progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ids_that_spell_other_keys_are_ordinary_tasks() {
    let (redis, broker) = redis_and_broker().await;
    // A cancellation first: the queue's cancel flag is set from now on.
    let cancelled = kiq_examples::math::add::kiq(&broker, 1, 1).await.unwrap();
    cancelled.cancel().await.unwrap();
    let _w = Workers::start(&redis.url(), 1, &[]);
    for id in ["active", "cancels", "x:progress", "x:cancel", "default"] {
        let h = kiq_examples::math::add::kicker()
            .task_id(id)
            .kiq(&broker, (40, 2))
            .await
            .unwrap();
        assert_eq!(
            h.wait_result(Duration::from_secs(30)).await.unwrap(),
            42,
            "{id}"
        );
    }
    // X's progress does not land on the record of `x:progress`.
    let x = kiq_examples::faults::crunch::kicker()
        .task_id("x")
        .kiq(&broker, (3,))
        .await
        .unwrap();
    x.wait_result(Duration::from_secs(30)).await.unwrap();
    let r = broker.record("x:progress").await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Succeeded);
}
