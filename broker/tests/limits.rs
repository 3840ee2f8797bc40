//! Dispatch refuses a message over kiq's limits before sending anything (the worker refuses the
//! same on read: `Envelope::check`), on a private redis-server.

use kiq_broker::envelope::{MAX_GROUP_MEMBERS, MAX_LABELS};
use kiq_broker::{Broker, DispatchError, Kicker, TaskSpec};
use kiq_testkit::RedisServer;

const SPEC: TaskSpec = TaskSpec {
    name: "t",
    queue: "q",
    retry: kiq_broker::RetryPolicy::NONE,
};

#[tokio::test]
async fn dispatch_refuses_messages_over_the_limits_and_sends_nothing() {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();

    let mut kicker = Kicker::<(i32,), i32>::new(SPEC);
    for i in 0..=MAX_LABELS {
        kicker = kicker.label(format!("k{i}"), "v");
    }
    match kicker.kiq(&broker, (1,)).await {
        Err(DispatchError::OverLimit { task, reason }) => {
            assert_eq!(task, "t");
            assert!(reason.contains("labels"), "{reason}");
        }
        other => panic!("expected OverLimit, got {other:?}"),
    }

    let members =
        (0..=MAX_GROUP_MEMBERS as i32).map(|i| Kicker::<(i32,), i32>::new(SPEC).with_args((i,)));
    match kiq_broker::workflow::group(members).kiq(&broker).await {
        Err(DispatchError::OverLimit { reason, .. }) => {
            assert!(reason.contains("members"), "{reason}")
        }
        other => panic!("expected OverLimit, got {:?}", other.map(|_| ())),
    }
    assert_eq!(redis.command("DBSIZE").unwrap().trim(), ":0");
}
