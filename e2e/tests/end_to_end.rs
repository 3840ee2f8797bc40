//! End to end on real Redis: `.kiq()` → `taskctl worker` processes → `wait_result`.

mod support;

use std::time::Duration;

use kiq::{FailureKind, TaskState, WaitError};
use kiq_examples::{faults, math, text};
use support::{redis_and_broker, Workers};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_succeed_and_stay_plain_functions() {
    assert_eq!(math::add(2, 3).await, 5, "the function is still callable");
    let (redis, broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 2, &[]);

    let h = math::add::kiq(&broker, 2, 3).await.unwrap();
    assert_eq!(h.id().len(), 32);
    let sum: i64 = h.wait_result(WAIT).await.unwrap();
    assert_eq!(sum, 5);

    let g = text::greet::kiq(&broker, "kiq".into()).await.unwrap();
    assert_eq!(g.wait_result(WAIT).await.unwrap(), "Hello, kiq!");

    let s = math::stats::kiq(&broker, vec![1.0, 2.0, 6.0])
        .await
        .unwrap();
    let stats = s.wait_result(WAIT).await.unwrap();
    assert_eq!(stats.count, 3);
    assert_eq!(stats.mean, Some(3.0));

    // A task on its own queue ("text"), read because a linked task names it.
    let wc = text::word_count::kiq(&broker, "a b A".into())
        .await
        .unwrap();
    let counts = wc.wait_result(WAIT).await.unwrap();
    assert_eq!(counts.get("a"), Some(&2));

    // The record says who ran it and when.
    let record = h.record().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.attempts, 1);
    assert!(record.worker.is_some());

    // Acked entries are deleted: the stream holds only live work.
    let xlen = redis.command("XLEN {kiq:default}:stream").unwrap();
    assert_eq!(xlen.trim(), ":0", "stream should be empty, got {xlen}");
    assert!(workers.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_errors_reach_the_caller_with_kind_and_message() {
    let (redis, broker) = redis_and_broker().await;
    let _workers = Workers::start(&redis.url(), 1, &[]);

    let h = math::divide::kiq(&broker, 1.0, 0.0).await.unwrap();
    match h.wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Error);
            assert_eq!(
                f.error_type.as_deref(),
                Some("kiq_examples::math::MathError")
            );
            assert_eq!(f.message, "cannot divide 1 by zero");
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
    let ok = math::divide::kiq(&broker, 9.0, 3.0).await.unwrap();
    assert_eq!(ok.wait_result(WAIT).await.unwrap(), 3.0);

    // anyhow errors keep their whole chain.
    let f = faults::flaky::kiq(&broker, "upstream 503".into())
        .await
        .unwrap();
    match f.wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => {
            assert!(f.message.contains("flaky task gave up"), "{}", f.message);
            assert!(f.message.contains("upstream 503"), "{}", f.message);
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_is_a_failure_and_the_worker_goes_on() {
    let (redis, broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 1, &[]);
    let before = workers.children();

    let p = faults::explode::kiq(&broker, "kaboom".into())
        .await
        .unwrap();
    match p.wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Panic);
            assert!(f.message.contains("kaboom"), "{}", f.message);
        }
        other => panic!("expected a panic failure, got {other:?}"),
    }
    // Same process, still serving.
    let h = math::add::kiq(&broker, 1, 1).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 2);
    assert_eq!(
        workers.children(),
        before,
        "the worker process was not replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_stopped_and_recorded() {
    let (redis, broker) = redis_and_broker().await;
    let _workers = Workers::start(&redis.url(), 1, &[]);
    let slow = faults::sleepy::kiq(&broker, 10_000).await.unwrap();
    match slow.wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => assert_eq!(f.kind, FailureKind::Timeout),
        other => panic!("expected a timeout failure, got {other:?}"),
    }
    let quick = faults::sleepy::kiq(&broker, 10).await.unwrap();
    assert_eq!(quick.wait_result(WAIT).await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_names_fail_and_are_dead_lettered() {
    let (redis, broker) = redis_and_broker().await;
    let _workers = Workers::start(&redis.url(), 1, &[]);
    let id = support::enqueue_by_name(&broker, "no::such::task", &(1,)).await;
    let h = broker.handle::<()>(id.clone());
    match h.wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::UnknownTask);
            assert!(f.message.contains("no::such::task"));
        }
        other => panic!("expected unknown task, got {other:?}"),
    }
    let dead = redis.command("XRANGE {kiq:default}:dead - +").unwrap();
    assert!(dead.contains("unknown_task"), "{dead}");
    assert!(dead.contains(&id), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_argument_types_fail_cleanly() {
    let (redis, broker) = redis_and_broker().await;
    let _workers = Workers::start(&redis.url(), 1, &[]);
    // `add` takes two integers; send a string and nothing.
    let id = support::enqueue_by_name(&broker, math::add::SPEC.name, &("two",)).await;
    match broker.handle::<i64>(id).wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => assert_eq!(f.kind, FailureKind::BadArguments),
        other => panic!("expected bad arguments, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_the_worker_survives() {
    let (redis, broker) = redis_and_broker().await;
    let workers = Workers::start(&redis.url(), 1, &[]);
    // Make sure the group exists, then write garbage straight into the stream.
    math::add::kiq(&broker, 0, 0)
        .await
        .unwrap()
        .wait_result(WAIT)
        .await
        .unwrap();
    for garbage in [
        "XADD {kiq:default}:stream * data not-msgpack",
        "XADD {kiq:default}:stream * other-field 1",
        "XADD {kiq:default}:stream * data \"\"",
    ] {
        assert!(
            redis.command(garbage).unwrap().starts_with('$'),
            "{garbage}"
        );
    }
    let h = math::add::kiq(&broker, 20, 22).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 42);
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            redis
                .command("XLEN {kiq:default}:dead")
                .map(|r| r.trim() == ":3")
                .unwrap_or(false)
        }),
        "dead letters: {:?}",
        redis.command("XLEN {kiq:default}:dead")
    );
    let dead = redis.command("XRANGE {kiq:default}:dead - +").unwrap();
    assert!(dead.contains("malformed"), "{dead}");
    assert!(
        dead.contains("not-msgpack"),
        "the original payload is kept: {dead}"
    );
    assert!(support::wait_until(Duration::from_secs(10), || {
        redis
            .command("XLEN {kiq:default}:stream")
            .map(|r| r.trim() == ":0")
            .unwrap_or(false)
    }));
    assert_eq!(workers.children().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_tells_timeout_from_unknown_from_redis_down() {
    let (mut redis, broker) = redis_and_broker().await;
    // No worker reads queue "nobody": the wait times out, the task is still pending.
    let h = math::add::kicker()
        .queue("nobody")
        .kiq(&broker, (1, 2))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // The timeout says why the task may never run: no worker at all.
    match h.wait_result(Duration::from_millis(300)).await {
        Err(WaitError::Timeout { hint: Some(hint) }) => {
            assert!(hint.starts_with("no worker is running"), "{hint}")
        }
        other => panic!("expected a timeout with a hint, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.record().await.unwrap().unwrap().state, TaskState::Pending);
    // With a worker that reads other queues, the hint names them.
    let workers = Workers::start(&redis.url(), 1, &["--queues", "default,text"]);
    let deadline = std::time::Instant::now() + WAIT;
    let hint = loop {
        // Bounded by the worker's first heartbeat (or WAIT).
        let r = h.wait_result(Duration::from_millis(100)).await;
        match &r {
            Err(WaitError::Timeout { hint: Some(h) }) if h.starts_with("no live worker reads") => {
                break r.unwrap_err().to_string()
            }
            _ if std::time::Instant::now() > deadline => panic!("no hint naming the queue: {r:?}"),
            _ => {}
        }
    };
    assert!(
        hint.contains("queue \"nobody\"") && hint.contains("live workers read: default, text"),
        "{hint}"
    );
    drop(workers);

    let unknown = broker.handle::<i64>("0123456789abcdef0123456789abcdef");
    assert!(matches!(
        unknown.wait_result(Duration::from_secs(5)).await,
        Err(WaitError::NotFound(_))
    ));

    redis.kill();
    match h.wait_result(Duration::from_millis(500)).await {
        Err(WaitError::Broker(e)) => assert!(e.is_unavailable(), "{e}"),
        other => panic!("expected Redis unavailable, got {other:?}"),
    }
    // And dispatch during an outage is an error, never a false success.
    assert!(math::add::kiq(&broker, 1, 1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_and_nothing_is_enqueued() {
    let redis = support::RedisServer::start().unwrap();
    let broker =
        kiq::Broker::from_config(kiq::BrokerConfig::new(redis.url()).max_payload_bytes(1024))
            .await
            .unwrap();
    let err = text::greet::kiq(&broker, "x".repeat(4096))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kiq::DispatchError::PayloadTooLarge { limit: 1024, .. }),
        "{err}"
    );
    let xlen = redis.command("XLEN {kiq:default}:stream").unwrap();
    assert!(xlen.trim() == ":0", "{xlen}");
    // Bad caller-supplied ids and queues are refused too.
    assert!(math::add::kicker()
        .task_id("a b")
        .kiq(&broker, (1, 1))
        .await
        .is_err());
    assert!(math::add::kicker()
        .queue("{x}")
        .kiq(&broker, (1, 1))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_waiters_share_a_few_connections() {
    let (redis, broker) = redis_and_broker().await;
    let handles = math::add::kiq_many(&broker, (0..2000).map(|i| (i, 1)))
        .await
        .unwrap();
    // Everyone waits before any worker runs.
    let mut waits = tokio::task::JoinSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        waits.spawn(async move { (i as i64, h.wait_result(Duration::from_secs(60)).await) });
    }
    let client_list = redis.command("CLIENT LIST").unwrap();
    // Ours only: not the Sentinels' connections, nor a replica's link, where they exist.
    let clients = client_list
        .lines()
        .filter(|l| l.contains("id=") && !l.contains("name=sentinel-") && !l.contains("flags=S"))
        .count();
    let workers = Workers::start(&redis.url(), 1, &[]);
    let mut done = 0;
    while let Some(r) = waits.join_next().await {
        let (i, result) = r.unwrap();
        assert_eq!(result.unwrap(), i + 1);
        done += 1;
    }
    assert_eq!(done, 2000);
    // This process: its shared command connections (`pool_size`) and one subscriber; plus the
    // probe itself. Through Sentinel, each command connection is preceded by a short-lived one
    // of redis-rs's to the primary, which asks it ROLE before use (sentinel.rs): the probe may
    // see those too.
    let pool = broker.config().pool_size;
    let role_checks = match redis.topology() {
        kiq_testkit::Topology::Sentinel => pool,
        _ => 0,
    };
    assert!(
        clients <= pool + 2 + role_checks,
        "{clients} connections for 2000 waiters:\n{client_list}"
    );
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pending_records_dispatch_is_one_xadd_and_waits_still_work() {
    let redis = support::RedisServer::start().unwrap();
    let broker = kiq::Broker::from_config(kiq::BrokerConfig::new(redis.url()).track_pending(false))
        .await
        .unwrap();
    let h = math::add::kiq(&broker, 20, 1).await.unwrap();
    // No record until a worker finishes it; a wait meanwhile is a timeout, not "unknown".
    assert!(h.record().await.unwrap().is_none());
    assert!(matches!(
        h.wait_result(Duration::from_millis(200)).await,
        Err(WaitError::Timeout { .. })
    ));
    let _workers = Workers::start(&redis.url(), 1, &[]);
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_several_busy_queues_never_strands_messages() {
    // COUNT applies per stream: with 2 slots and 2 busy queues a read can return 4 messages.
    // None may be left waiting for a reclaim (the visibility timeout here is 60 s).
    let (redis, broker) = redis_and_broker().await;
    let adds = math::add::kiq_many(&broker, (0..50).map(|i| (i, 1)))
        .await
        .unwrap();
    let words = text::word_count::kiq_many(&broker, (0..50).map(|_| ("a b".to_string(),)))
        .await
        .unwrap();
    let _w = Workers::start(
        &redis.url(),
        1,
        &[
            "--concurrency",
            "2",
            "--prefetch",
            "0",
            "--visibility-timeout",
            "60s",
            "--queues",
            "default,text",
        ],
    );
    for (i, h) in adds.into_iter().enumerate() {
        assert_eq!(
            h.wait_result(Duration::from_secs(20)).await.unwrap(),
            i as i64 + 1
        );
    }
    for h in words {
        assert_eq!(
            h.wait_result(Duration::from_secs(20)).await.unwrap().len(),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_state_is_injected_and_not_sent() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start_env(&redis.url(), 1, &[], &[("KIQ_EXAMPLE_GREETING", "Namaste")]);
    // Only `name` is dispatched; the worker injects its GreetingConfig.
    let h = text::greet_with::kiq(&broker, "Asha".into()).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), "Namaste, Asha!");
    // Called directly, the caller passes the state itself.
    let cfg = text::GreetingConfig {
        greeting: "Hi".into(),
    };
    assert_eq!(
        text::greet_with(kiq::State(cfg), "Ben".into()).await,
        "Hi, Ben!"
    );
}

/// Messages written straight into Redis are checked by the rules dispatch applies before a
/// worker acts on them: an empty or CRLF task id, a queue name that breaks out of its hash tag,
/// a chain step bound for such a queue. Each becomes a `malformed` dead letter, and nothing is
/// written to the key it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_messages_with_bad_ids_or_queues_are_dead_lettered() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 1, &[]);
    let good = |id: &str| kiq::broker::Envelope {
        v: 1,
        id: id.to_string(),
        task: math::add::SPEC.name.to_string(),
        queue: "default".to_string(),
        args: broker.codec().encode(&(1i64, 2i64)).unwrap(),
        ..Default::default()
    };
    let mut crafted = Vec::new();
    crafted.push(good(""));
    crafted.push(good("a\r\nb"));
    crafted.push(good(".."));
    let mut e = good("escape-queue");
    e.queue = "x}{y".to_string();
    crafted.push(e);
    let mut e = good("escape-step");
    e.then = vec![kiq::broker::Envelope {
        queue: "x}{y".to_string(),
        ..good("step-2")
    }];
    crafted.push(e);
    let mut conn = kiq::broker::connect_redis(&redis.url()).await.unwrap();
    for e in &crafted {
        let payload = broker.wire().encode_envelope(e).unwrap();
        let _: String = redis::cmd("XADD")
            .arg("{kiq:default}:stream")
            .arg("*")
            .arg("data")
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A good task after them runs: they were dealt with, not stuck.
    let h = math::add::kiq(&broker, 20, 22).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 42);
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            redis
                .command("XLEN {kiq:default}:dead")
                .map(|r| r.trim() == format!(":{}", crafted.len()))
                .unwrap_or(false)
        }),
        "dead letters: {:?}",
        redis.command("XRANGE {kiq:default}:dead - +")
    );
    let dead = redis.command("XRANGE {kiq:default}:dead - +").unwrap();
    assert!(dead.contains("invalid task id"), "{dead}");
    assert!(dead.contains("invalid queue"), "{dead}");
    assert!(dead.contains("invalid chain step"), "{dead}");
    // Larger than the dispatch limit: dead-lettered without being decoded.
    let huge = vec![0x91u8; 9 << 20];
    let _: String = redis::cmd("XADD")
        .arg("{kiq:default}:stream")
        .arg("*")
        .arg("data")
        .arg(huge)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        support::wait_until(Duration::from_secs(20), || {
            redis
                .command("XLEN {kiq:default}:dead")
                .map(|r| r.trim() == format!(":{}", crafted.len() + 1))
                .unwrap_or(false)
        }),
        "no too_large dead letter"
    );
    let too_large = broker
        .inspector()
        .find_dead_letters(
            &kiq::broker::DeadFilter {
                queue: None,
                reason: Some("too_large".into()),
                task: None,
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(too_large.len(), 1);
    assert_eq!(
        too_large[0].payload.len(),
        9 << 20,
        "the original bytes are kept"
    );
    // Nothing ran: no record under the crafted ids, no stream for the escaped queue.
    for key in [
        "{kiq:t:escape-queue}",
        "{kiq:t:escape-step}",
        "{kiq:x}{y}:stream",
    ] {
        let n = redis.command(&format!("EXISTS {key}")).unwrap();
        assert_eq!(n.trim(), ":0", "{key}");
    }
}
