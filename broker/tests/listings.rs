//! Paged listings on a private redis-server: finished tasks and dead letters page through with
//! cursors, without gaps or repeats, however many entries share a finishing time, and a
//! filtered dead-letter listing stops after its budget and resumes where it stopped.

use kiq_broker::{Broker, DeadCursor, DeadFilter, Keys, TaskCursor, TaskState};
use kiq_testkit::RedisServer;

async fn setup() -> (RedisServer, Broker, redis::aio::MultiplexedConnection) {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    let conn = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (redis, broker, conn)
}

#[tokio::test]
async fn finished_listings_page_through_ties_without_gaps_or_repeats() {
    let (_redis, broker, mut conn) = setup().await;
    let k = Keys::new("kiq");
    // Queue a: 150 tasks finishing in groups of 10 per millisecond; queue b: 75, at the same
    // times as some of a's.
    let mut expected: Vec<(u64, String)> = Vec::new();
    let mut pipe = redis::pipe();
    pipe.cmd("SADD").arg(k.queues()).arg("a").arg("b").ignore();
    for i in 0..150u64 {
        let (at, id) = (1_000 + i / 10, format!("a{i:03}"));
        pipe.cmd("ZADD")
            .arg(k.index("a", TaskState::Succeeded))
            .arg(at)
            .arg(&id)
            .ignore();
        expected.push((at, id));
    }
    for i in 0..75u64 {
        let (at, id) = (1_000 + i / 5, format!("b{i:03}"));
        pipe.cmd("ZADD")
            .arg(k.index("b", TaskState::Succeeded))
            .arg(at)
            .arg(&id)
            .ignore();
        expected.push((at, id));
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    expected.sort_by(|x, y| y.cmp(x));

    for (queue, limit) in [(None, 40), (None, 7), (Some("a"), 40), (Some("b"), 1)] {
        let mut got: Vec<String> = Vec::new();
        let mut after: Option<TaskCursor> = None;
        let mut pages = 0;
        loop {
            let page = broker
                .inspector()
                .list_tasks_page(TaskState::Succeeded, queue, limit, after.as_ref())
                .await
                .unwrap();
            got.extend(page.tasks.into_iter().map(|t| t.id));
            pages += 1;
            assert!(pages < 1_000, "no end to the pages");
            match page.next {
                // The cursor survives its text form (what the API hands out).
                Some(c) => after = Some(c.to_string().parse().unwrap()),
                None => break,
            }
        }
        let want: Vec<String> = expected
            .iter()
            .filter(|(_, id)| queue.is_none_or(|q| id.starts_with(q)))
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(got, want, "queue {queue:?}, pages of {limit}");
    }
    assert!("nonsense".parse::<TaskCursor>().is_err());
    assert!("12:".parse::<TaskCursor>().is_err());
}

#[tokio::test]
async fn dead_letter_pages_resume_where_they_stopped() {
    let (_redis, broker, mut conn) = setup().await;
    let k = Keys::new("kiq");
    let mut pipe = redis::pipe();
    pipe.cmd("SADD")
        .arg(k.queues())
        .arg("a")
        .arg("a:high")
        .ignore();
    for (lane, n) in [("a", 1_200u64), ("a:high", 30)] {
        for i in 0..n {
            pipe.cmd("XADD")
                .arg(k.dead(lane))
                .arg("*")
                .arg("reason")
                .arg("retries_exhausted")
                .arg("error")
                .arg("boom")
                .arg("payload")
                .arg("x")
                .arg("task_id")
                .arg(format!("{lane}-{i}"))
                .arg("task")
                .arg(if i % 100 == 7 { "rare" } else { "common" })
                .ignore();
        }
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let all = |filter: DeadFilter, limit: usize, budget: usize| {
        let broker = broker.clone();
        async move {
            let mut got = Vec::new();
            let mut after: Option<DeadCursor> = None;
            let mut pages = 0;
            loop {
                let page = broker
                    .inspector()
                    .dead_letter_page(&filter, after.as_ref(), limit, budget)
                    .await
                    .unwrap();
                assert!(page.entries.len() <= limit);
                got.extend(page.entries.into_iter().map(|e| e.task_id.unwrap()));
                pages += 1;
                assert!(pages < 1_000, "no end to the pages");
                match page.next {
                    Some(c) => after = Some(c.to_string().parse().unwrap()),
                    None => break,
                }
            }
            (got, pages)
        }
    };
    // Unfiltered: every entry once, lane by lane, oldest first.
    let (got, _) = all(DeadFilter::default(), 100, 10_000).await;
    assert_eq!(got.len(), 1_230);
    assert_eq!(got[0], "a-0");
    assert_eq!(got[1_199], "a-1199");
    assert_eq!(got[1_200], "a:high-0");
    // A rare task with a small budget: short (even empty) pages, then every match once.
    let rare = DeadFilter {
        task: Some("rare".into()),
        ..Default::default()
    };
    let (got, pages) = all(rare, 100, 250).await;
    let want: Vec<String> = (0..1_200)
        .filter(|i| i % 100 == 7)
        .map(|i| format!("a-{i}"))
        .chain(std::iter::once("a:high-7".to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(
        pages >= 1_230 / 250,
        "the budget bounds each page: {pages} pages"
    );
    assert!("a:high/12-0".parse::<DeadCursor>().is_ok());
    assert!("a:high/not-an-id".parse::<DeadCursor>().is_err());
}
