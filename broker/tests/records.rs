//! Task records in Redis, on a private redis-server: the compact layout and the named-map
//! records written before it are both read, and a cancellation tells a finished record from
//! the bytes at its head only (an argument that spells a final state does not fool it).

use kiq_broker::{Broker, CancelOutcome, Keys, KiqWire, TaskRecord, TaskState, WireFormat};
use kiq_testkit::RedisServer;
use redis::aio::MultiplexedConnection;

async fn setup() -> (RedisServer, Broker, MultiplexedConnection) {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    let conn = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (redis, broker, conn)
}

/// A record as a worker writes it while the task runs, carrying `args`.
fn running(args: Vec<u8>) -> TaskRecord {
    let mut r = TaskRecord::accepted("app::t", "default", 1_000, false);
    r.state = TaskState::Running;
    r.worker = Some("w-1".into());
    r.started_at_ms = Some(1_010);
    r.args = Some(args);
    r
}

async fn put(conn: &mut MultiplexedConnection, id: &str, bytes: Vec<u8>) {
    let key = Keys::new("kiq").task(id);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(bytes)
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_running_task_whose_arguments_spell_a_final_state_is_cancelled() {
    let (_redis, broker, mut conn) = setup().await;
    // The arguments ("state", "succeeded") encode as fixstr "state", fixstr "succeeded": the
    // bytes that mark a finished record of the named encoding.
    let args = rmp_serde::to_vec(&("state", "succeeded")).unwrap();
    for (id, bytes) in [
        (
            "compact",
            KiqWire.encode_record(&running(args.clone())).unwrap(),
        ),
        (
            "named",
            rmp_serde::to_vec_named(&running(args.clone())).unwrap(),
        ),
    ] {
        put(&mut conn, id, bytes).await;
        assert_eq!(
            broker.cancel(id).await.unwrap(),
            CancelOutcome::Cancelled,
            "{id}"
        );
        let r = broker.record(id).await.unwrap().unwrap();
        assert_eq!(r.state, TaskState::Cancelled, "{id}");
        assert_eq!(r.args.as_deref(), Some(&args[..]), "{id}");
    }
}

#[tokio::test]
async fn finished_records_of_both_encodings_are_read_and_left_alone() {
    let (_redis, broker, mut conn) = setup().await;
    for state in TaskState::FINAL {
        let mut r = running(vec![0x90]);
        r.state = state;
        r.attempts = 1;
        r.finished_at_ms = Some(1_020);
        r.output = Some(vec![0xc0]);
        r.enter(TaskState::Pending, 1_000, 0, None);
        r.enter(TaskState::Running, 1_010, 0, Some("w-1".into()));
        r.enter(state, 1_020, 0, None);
        for (enc, bytes) in [
            ("compact", KiqWire.encode_record(&r).unwrap()),
            ("named", rmp_serde::to_vec_named(&r).unwrap()),
        ] {
            let id = format!("{enc}-{state}");
            put(&mut conn, &id, bytes).await;
            assert_eq!(broker.record(&id).await.unwrap().as_ref(), Some(&r), "{id}");
            assert_eq!(
                broker.cancel(&id).await.unwrap(),
                CancelOutcome::AlreadyFinished,
                "{id}"
            );
            assert_eq!(broker.record(&id).await.unwrap().as_ref(), Some(&r), "{id}");
        }
    }
}
