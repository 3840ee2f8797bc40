//! Priorities: under a backlog, workers start critical tasks first, then high, normal, low.

mod support;

use std::time::Duration;

use kiq::Priority;
use kiq_examples::bench;
use support::{redis_and_broker, Workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_start_first_under_a_backlog() {
    let (redis, broker) = redis_and_broker().await;
    // The backlog builds up with no worker running, least urgent first.
    let order = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];
    let mut handles = Vec::new();
    for p in order {
        let hs = bench::sequence::kicker()
            .priority(p)
            .kiq_many(&broker, std::iter::repeat_n((), 40))
            .await
            .unwrap();
        handles.push((p, hs));
    }
    assert!(redis
        .command("XLEN {kiq:bench}:critical:stream")
        .unwrap()
        .contains(":40"));

    // One process, one task at a time (prefetch included), so the start order is observable.
    let _w = Workers::start(&redis.url(), 1, &["--concurrency", "1", "--prefetch", "4"]);
    let mut ranges = Vec::new();
    for (p, hs) in handles {
        let mut seqs = Vec::new();
        for h in hs {
            seqs.push(h.wait_result(Duration::from_secs(30)).await.unwrap());
        }
        let (lo, hi) = (*seqs.iter().min().unwrap(), *seqs.iter().max().unwrap());
        println!("{p}: started {lo}..={hi}");
        ranges.push((p, lo, hi));
    }
    ranges.sort_by_key(|(p, _, _)| *p);
    for pair in ranges.windows(2) {
        let ((a, _, a_last), (b, b_first, _)) = (pair[0], pair[1]);
        assert!(
            a_last < b_first,
            "every {a} task must start before any {b} task: {ranges:?}"
        );
    }
    // Priority survives a retry: the record names the queue, not the lane.
    let h = bench::sequence::kicker()
        .priority(Priority::High)
        .kiq(&broker, ())
        .await
        .unwrap();
    h.wait_result(Duration::from_secs(30)).await.unwrap();
    assert_eq!(h.record().await.unwrap().unwrap().queue, "bench");
}
