//! The throughput history read back on a private redis-server: ten-minute steps come from
//! rollups made on first read, which sum the same minutes a minute-step read does.

use kiq_broker::{Broker, Keys};
use kiq_testkit::RedisServer;

#[tokio::test]
async fn ten_minute_steps_read_rollups_that_sum_the_minutes() {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    let mut conn = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let k = Keys::new("kiq");
    let now_s = kiq_broker::envelope::now_ms() / 1000;
    // An hour of minutes, ending at the last whole ten minutes before now: minute m counts
    // m+1 successes of task `app::t` on queue `mail`.
    let end = now_s - now_s % 600;
    let start = end - 3600;
    let mut pipe = redis::pipe();
    for (i, m) in (start..end).step_by(60).enumerate() {
        pipe.cmd("HSET")
            .arg(k.history(60, m))
            .arg("q:mail:succeeded")
            .arg(i + 1)
            .arg("t:app::t:succeeded")
            .arg(i + 1)
            .arg("t:app::t:r3")
            .arg(1)
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let inspector = broker.inspector();
    let sum = |h: &kiq_broker::History| -> (u64, u64) {
        h.points.iter().fold((0, 0), |(s, r), p| {
            let c = p.tasks.get("app::t").cloned().unwrap_or_default();
            (s + c.succeeded, r + c.run_hist.iter().sum::<u64>())
        })
    };
    let by_minute = inspector
        .history(start * 1000, end * 1000, 60)
        .await
        .unwrap();
    assert_eq!(by_minute.points.len(), 60);
    assert_eq!(sum(&by_minute), (60 * 61 / 2, 60));
    let by_ten = inspector
        .history(start * 1000, end * 1000, 600)
        .await
        .unwrap();
    assert_eq!(by_ten.points.len(), 6);
    assert_eq!(sum(&by_ten), (60 * 61 / 2, 60));
    // The first window's point: minutes 1 to 10.
    assert_eq!(by_ten.points[0].queues["mail"].succeeded, 55);
    // Settled windows were rolled up (marked, with a TTL), and are read from the rollup from
    // now on: a change to a minute no longer shows.
    let rolled: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(k.history(600, start))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(rolled.iter().any(|(f, _)| f == "rolled"), "{rolled:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(k.history(600, start))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0);
    let _: () = redis::cmd("HINCRBY")
        .arg(k.history(60, start))
        .arg("t:app::t:succeeded")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let again = inspector
        .history(start * 1000, end * 1000, 600)
        .await
        .unwrap();
    assert_eq!(sum(&again), (60 * 61 / 2, 60));
    // Steps of 20 minutes are two rollups a point.
    let by_twenty = inspector
        .history(start * 1000, end * 1000, 1200)
        .await
        .unwrap();
    assert_eq!(sum(&by_twenty).0, 60 * 61 / 2);
}
