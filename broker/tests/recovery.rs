//! Broker-level recovery operations on a private redis-server.

use std::time::Duration;

use kiq_broker::{Broker, Kicker, TaskSpec};
use kiq_testkit::RedisServer;

const SPEC: TaskSpec = TaskSpec {
    name: "t",
    queue: "q",
    retry: kiq_broker::RetryPolicy::NONE,
};

#[tokio::test]
async fn consumers_are_removed_only_when_they_hold_nothing() {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    redis
        .command("XGROUP CREATE {kiq:q}:stream kiq 0 MKSTREAM")
        .unwrap();
    // "busy" holds a message; "gone" holds nothing.
    Kicker::<(i32,), i32>::new(SPEC)
        .kiq(&broker, (1,))
        .await
        .unwrap();
    let mut busy = broker
        .consumer("busy")
        .reader(&["q".to_string()])
        .await
        .unwrap();
    assert_eq!(
        busy.read(10, Duration::from_millis(10))
            .await
            .unwrap()
            .len(),
        1
    );
    let mut gone = broker
        .consumer("gone")
        .reader(&["q".to_string()])
        .await
        .unwrap();
    assert!(gone
        .read(10, Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());

    assert!(!broker.consumer("busy").leave("q").await.unwrap());
    // Idle time is the event here: let both consumers age past the threshold.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        broker
            .consumer("janitor")
            .prune_consumers("q", Duration::from_millis(100))
            .await
            .unwrap(),
        1
    );
    let consumers = redis.command("XINFO CONSUMERS {kiq:q}:stream kiq").unwrap();
    assert!(
        consumers.contains("busy") && !consumers.contains("gone"),
        "{consumers}"
    );
}

#[tokio::test]
async fn delayed_messages_are_promoted_when_due_and_not_before() {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    redis
        .command("XGROUP CREATE {kiq:q}:stream kiq 0 MKSTREAM")
        .unwrap();
    redis
        .command("ZADD {kiq:q}:delayed 1000 early 5000 late")
        .unwrap();
    let p = broker
        .consumer("forwarder")
        .promote_due("q", 999, 10)
        .await
        .unwrap();
    assert_eq!((p.moved, p.next_due_ms), (0, Some(1000)));
    let p = broker
        .consumer("forwarder")
        .promote_due("q", 1000, 10)
        .await
        .unwrap();
    assert_eq!((p.moved, p.next_due_ms), (1, Some(5000)));
    let p = broker
        .consumer("forwarder")
        .promote_due("q", 9999, 10)
        .await
        .unwrap();
    assert_eq!((p.moved, p.next_due_ms), (1, None));
    assert_eq!(redis.command("XLEN {kiq:q}:stream").unwrap().trim(), ":2");
}

/// A lease refresh reports as lost only what another consumer owns now. An entry acked here
/// between the in-flight snapshot and the refresh (a task that just finished) once counted as
/// lost, and one worker alone logged "taken over by another worker ... may run twice".
#[tokio::test]
async fn a_lease_refresh_reports_only_entries_another_consumer_took() {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    redis
        .command("XGROUP CREATE {kiq:q}:stream kiq 0 MKSTREAM")
        .unwrap();
    for n in 0..2 {
        Kicker::<(i32,), i32>::new(SPEC)
            .kiq(&broker, (n,))
            .await
            .unwrap();
    }
    let mut reader = broker
        .consumer("a")
        .reader(&["q".to_string()])
        .await
        .unwrap();
    let got = reader.read(10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.len(), 2);
    let (done, taken) = (&got[0].stream_id, &got[1].stream_id);
    // One finished here (acked), the other taken over by "b".
    redis
        .command(&format!("XACK {{kiq:q}}:stream kiq {done}"))
        .unwrap();
    redis
        .command(&format!("XCLAIM {{kiq:q}}:stream kiq b 0 {taken} JUSTID"))
        .unwrap();
    let lost = broker
        .consumer("a")
        .refresh_leases("q", &[done.clone(), taken.clone()])
        .await
        .unwrap();
    assert_eq!(lost, vec![taken.clone()]);
}
