//! Execution middleware on real workers: the global rate limit and the circuit breaker.

mod support;

use std::time::Duration;

use kiq::{TaskState, WaitError};
use kiq_examples::{bench, faults};
use support::{redis_and_broker, wait_for_state, Workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_worker_processes_and_defers_without_failing() {
    let (redis, broker) = redis_and_broker().await;
    let name = bench::stamp::SPEC.name;
    // 5 starts a second, a burst of 1, shared by two processes of 8 slots each.
    let limit = format!("{name}=5/s:1");
    let _w = Workers::start(
        &redis.url(),
        2,
        &[
            "--rate-limit",
            &limit,
            "--concurrency",
            "8",
            "--queues",
            "bench",
        ],
    );
    let hs = bench::stamp::kicker()
        .kiq_many(&broker, std::iter::repeat_n((), 11))
        .await
        .unwrap();
    let mut starts = Vec::new();
    for h in &hs {
        starts.push(h.wait_result(Duration::from_secs(60)).await.unwrap());
        // Deferrals are not attempts.
        assert_eq!(h.record().await.unwrap().unwrap().attempts, 1);
    }
    starts.sort();
    let span = starts[starts.len() - 1] - starts[0];
    println!("11 starts at 5/s took {span} ms");
    // A bucket of 1 refilled at 5/s cannot start 11 tasks in less than 2 s (10 refills); the
    // stamps are taken a moment after the token, so allow 100 ms of skew.
    assert!(
        span >= 1900,
        "11 tasks started within {span} ms: the limit did not hold"
    );
    // The bucket lives in Redis, under the task's name.
    assert!(redis
        .command(&format!("EXISTS {{kiq:r:{name}}}"))
        .unwrap()
        .contains(":1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_opens_after_failures_defers_tasks_and_closes_after_a_good_trial() {
    let (redis, broker) = redis_and_broker().await;
    let w = Workers::start_env(
        &redis.url(),
        1,
        &["--circuit-breaker", "2/1s", "--concurrency", "1"],
        &[("KIQ_REDIS_URL", &redis.url())],
    );
    // Two consecutive failures open the circuit.
    for _ in 0..2 {
        let h = faults::gate::kiq(&broker, "cb-gate".into()).await.unwrap();
        match h.wait_result(Duration::from_secs(20)).await {
            Err(WaitError::Failed(f)) => assert!(f.message.contains("closed"), "{f:?}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    // While open, the next one is deferred: back in the delayed set, not failed.
    let h = faults::gate::kiq(&broker, "cb-gate".into()).await.unwrap();
    assert!(
        wait_for_state(&broker, h.id(), TaskState::Scheduled).await,
        "the task was not deferred; log:\n{}",
        w.log_text()
    );
    assert!(w.log_text().contains("circuit opened"));
    // The dependency recovers; after the cool-down the deferred task is the trial, succeeds,
    // and closes the circuit.
    redis.command("SET cb-gate 1").unwrap();
    let out = h.wait_result(Duration::from_secs(20)).await.unwrap();
    assert_eq!(out, "cb-gate is open");
    let rec = h.record().await.unwrap().unwrap();
    assert_eq!(rec.attempts, 1, "a deferral is not an attempt");
    assert!(wait_until_log(&w, "circuit closed"));
    let h = faults::gate::kiq(&broker, "cb-gate".into()).await.unwrap();
    assert_eq!(
        h.wait_result(Duration::from_secs(20)).await.unwrap(),
        "cb-gate is open"
    );
}

fn wait_until_log(w: &Workers, text: &str) -> bool {
    kiq_testkit::wait_until(Duration::from_secs(10), || w.log_text().contains(text))
}

/// Stamps every dispatch with a label, and refuses tasks without a tenant.
struct TenantStamp;

impl kiq::broker::DispatchLayer for TenantStamp {
    fn on_dispatch(&self, envelope: &mut kiq::broker::Envelope) -> Result<(), String> {
        if !envelope.labels.contains_key("tenant") {
            return Err("every task needs a tenant label".into());
        }
        envelope
            .labels
            .insert("sent_by".into(), "billing-api".into());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_layers_can_refuse_and_stamp_messages_and_labels_reach_the_task() {
    let (redis, _) = redis_and_broker().await;
    let broker =
        kiq::Broker::from_config(kiq::BrokerConfig::new(redis.url()).dispatch_layer(TenantStamp))
            .await
            .unwrap();
    match kiq_examples::text::describe_self::kiq(&broker).await {
        Err(kiq::DispatchError::Refused { reason, .. }) => assert!(reason.contains("tenant")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(redis
        .command("XLEN {kiq:default}:stream")
        .unwrap()
        .contains(":0"));
    let _w = Workers::start(&redis.url(), 1, &[]);
    let h = kiq_examples::text::describe_self::kicker()
        .label("tenant", "acme")
        .kiq(&broker, ())
        .await
        .unwrap();
    let seen = h.wait_result(Duration::from_secs(20)).await.unwrap();
    assert_eq!(seen["tenant"], "acme");
    assert_eq!(seen["sent_by"], "billing-api");
    assert_eq!(seen["id"], h.id());
    assert_eq!(seen["attempt"], "0");
}
