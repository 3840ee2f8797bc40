//! Unit tests of the tasks without Redis: `kiq::testing::broker()` runs them in-process through
//! the worker's execution path (retries, timeouts, errors), with the same API as a Redis broker.

use std::time::Duration;

use kiq::{FailureKind, WaitError};
use kiq_starter::{add, charge, Order};

#[tokio::test]
async fn add_adds() {
    let broker = kiq::testing::broker().unwrap();
    let h = add::kiq(&broker, 2, 3).await.unwrap();
    assert_eq!(h.wait_result(Duration::from_secs(1)).await.unwrap(), 5);
}

#[tokio::test]
async fn an_empty_order_fails_with_its_message() {
    let broker = kiq::testing::broker().unwrap();
    // No retries for this call: the failure is final at once.
    let h = charge::kicker()
        .retries(0)
        .kiq(&broker, (Order { id: 8, cents: 0 },))
        .await
        .unwrap();
    match h.wait_result(Duration::from_secs(1)).await {
        Err(WaitError::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Error);
            assert_eq!(f.message, "order 8 has nothing to charge");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn the_task_is_still_a_plain_function() {
    assert_eq!(add(1, 1).await, 2);
}
