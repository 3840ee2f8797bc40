//! What a user's unit tests look like with `kiq::testing::broker()`: the example tasks are
//! dispatched and awaited exactly as in production, with no Redis anywhere.

use std::time::Duration;

use kiq::{FailureKind, TaskState, WaitError};
use kiq_examples::{faults, math, text};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn dispatch_and_results_work_without_redis() {
    let broker = kiq::testing::broker().unwrap();
    assert!(broker.is_in_memory());

    let h = math::add::kiq(&broker, 2, 3).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 5);
    assert_eq!(
        h.record().await.unwrap().unwrap().state,
        TaskState::Succeeded
    );

    // Typed errors and panics come back as failures, as with a worker.
    match math::divide::kiq(&broker, 1.0, 0.0)
        .await
        .unwrap()
        .wait_result(WAIT)
        .await
    {
        Err(WaitError::Failed(f)) => assert!(f.message.contains("by zero")),
        other => panic!("{other:?}"),
    }
    match faults::explode::kiq(&broker, "boom".into())
        .await
        .unwrap()
        .wait_result(WAIT)
        .await
    {
        Err(WaitError::Failed(f)) => assert_eq!(f.kind, FailureKind::Panic),
        other => panic!("{other:?}"),
    }

    // Retries run with their backoff: fail_until(2) fails twice, then succeeds.
    let h = faults::fail_until::kiq(&broker, 2).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 2);
    assert_eq!(h.record().await.unwrap().unwrap().attempts, 3);

    // Labels and the task context reach the task.
    let seen = text::describe_self::kicker()
        .label("tenant", "acme")
        .kiq(&broker, ())
        .await
        .unwrap()
        .wait_result(WAIT)
        .await
        .unwrap();
    assert_eq!(seen["tenant"], "acme");
}

#[tokio::test]
async fn workflows_delays_uniqueness_and_cancellation_work_without_redis() {
    let broker = kiq::testing::broker().unwrap();

    let last = math::add::call(1, 2)
        .then(math::double::link())
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(last.wait_result(WAIT).await.unwrap(), 6);

    let (_, total) = kiq::group((1..=10).map(|i| math::add::call(i, 0)))
        .then(math::total::link())
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(total.wait_result(WAIT).await.unwrap(), 55);

    // A delayed task is scheduled, then runs.
    let h = math::add::kicker()
        .delay(Duration::from_millis(50))
        .kiq(&broker, (1, 1))
        .await
        .unwrap();
    assert_eq!(
        h.record().await.unwrap().unwrap().state,
        TaskState::Scheduled
    );
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 2);

    // A second dispatch with the same unique key returns the first task.
    let a = faults::nap::kicker()
        .unique("nightly", Duration::from_secs(60))
        .kiq(&broker, (200,))
        .await
        .unwrap();
    let b = faults::nap::kicker()
        .unique("nightly", Duration::from_secs(60))
        .kiq(&broker, (200,))
        .await
        .unwrap();
    assert_eq!(a.id(), b.id());

    // Cancelling a delayed task: it never runs.
    let h = math::add::kicker()
        .delay(Duration::from_secs(30))
        .kiq(&broker, (1, 1))
        .await
        .unwrap();
    h.cancel().await.unwrap();
    match h.wait_result(WAIT).await {
        Err(WaitError::Failed(f)) => assert_eq!(f.kind, FailureKind::Cancelled),
        other => panic!("{other:?}"),
    }
}
