//! Workflows on real workers: chains, groups with gather, and a group's callback.

mod support;

use std::time::Duration;

use kiq::{FailureKind, TaskState, WaitError};
use kiq_examples::math::{add, double, halve_even, total};
use support::{redis_and_broker, Workers};

const WAIT: Duration = Duration::from_secs(30);

fn failure_kind<T: std::fmt::Debug>(r: Result<T, WaitError>) -> (FailureKind, String) {
    match r {
        Err(WaitError::Failed(f)) => (f.kind, f.message),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_pass_outputs_along_and_stop_at_a_failed_step() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 2, &[]);

    // (1 + 2) * 2 * 2, each step on whichever worker takes it.
    let last = add::call(1, 2)
        .then(double::link())
        .then(double::link())
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(last.wait_result(WAIT).await.unwrap(), 12);

    // 1 + 2 is odd: halve_even fails, so double never runs and says why.
    let last = add::call(1, 2)
        .then(halve_even::link())
        .then(double::link())
        .kiq(&broker)
        .await
        .unwrap();
    let (kind, message) = failure_kind(last.wait_result(WAIT).await);
    assert_eq!(kind, FailureKind::Aborted);
    assert!(message.contains("3 is odd"), "{message}");
    let rec = last.record().await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (TaskState::Failed, 0));

    // Every step has a record from the start: the last one is pending before it runs.
    let (redis2, broker2) = redis_and_broker().await;
    let last = add::call(2, 2)
        .then(double::link())
        .kiq(&broker2)
        .await
        .unwrap();
    assert_eq!(
        last.record().await.unwrap().unwrap().state,
        TaskState::Pending
    );
    let _w2 = Workers::start(&redis2.url(), 1, &[]);
    assert_eq!(last.wait_result(WAIT).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_gather_in_order_and_a_callback_runs_once_all_are_done() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 2, &[]);

    let group = kiq::group((0..50).map(|i| add::call(i, i)))
        .kiq(&broker)
        .await
        .unwrap();
    let outputs = group.gather_all(WAIT).await.unwrap();
    assert_eq!(outputs, (0..50).map(|i| 2 * i).collect::<Vec<i64>>());

    // A callback gets every member's output, in order.
    let (members, sum) = kiq::group((1..=100).map(|i| add::call(i, 0)))
        .then(total::link())
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(sum.wait_result(WAIT).await.unwrap(), 5050);
    assert_eq!(members.handles.len(), 100);
    // It ran once: the group's counter saw each member once.
    let done = redis
        .command(&format!("HGET {{kiq:default}}:group:{} done", members.id))
        .unwrap();
    assert!(done.contains("100"), "{done}");

    // A member that fails for good aborts the callback; gather shows which one failed.
    let (members, sum) = kiq::group([
        halve_even::call(2),
        halve_even::call(3),
        halve_even::call(4),
    ])
    .then(total::link())
    .kiq(&broker)
    .await
    .unwrap();
    let (kind, message) = failure_kind(sum.wait_result(WAIT).await);
    assert_eq!(kind, FailureKind::Aborted);
    assert!(message.contains("3 is odd"), "{message}");
    let results = members.gather(WAIT).await;
    assert_eq!(results[0].as_ref().unwrap(), &1);
    assert!(results[1].is_err());
    assert_eq!(results[2].as_ref().unwrap(), &2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_step_keeps_its_own_options() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 1, &["--queues", "default,other"]);
    // The second step goes to another queue at high priority, with a label.
    let last = add::call(20, 1)
        .then(
            double::kicker()
                .queue("other")
                .priority(kiq::Priority::High)
                .label("step", "2")
                .link(),
        )
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(last.wait_result(WAIT).await.unwrap(), 42);
    assert_eq!(last.record().await.unwrap().unwrap().queue, "other");
}

/// A member that finishes after its group's hash expired counts nothing and creates nothing:
/// the hash once came back without a TTL, and stayed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_finishing_after_its_group_expired_leaves_no_key_behind() {
    let (redis, broker) = redis_and_broker().await;
    let (members, _sum) = kiq::group((1..=3).map(|i| add::call(i, 0)))
        .then(total::link())
        .kiq(&broker)
        .await
        .unwrap();
    let key = format!("{{kiq:default}}:group:{}", members.id);
    assert_eq!(
        redis.command(&format!("EXISTS {key}")).unwrap().trim(),
        ":1"
    );
    // As if it expired before the members ran.
    redis.command(&format!("DEL {key}")).unwrap();
    let _w = Workers::start(&redis.url(), 1, &[]);
    let outputs = members.gather_all(WAIT).await.unwrap();
    assert_eq!(outputs, [1, 2, 3]);
    assert_eq!(
        redis.command(&format!("EXISTS {key}")).unwrap().trim(),
        ":0"
    );
}
