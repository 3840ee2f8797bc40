//! Operations: task states with their history, listed by state and queue, with bounded
//! retention, on real workers; and the `taskctl` commands that show them.

mod support;

use std::time::{Duration, Instant};

use kiq::TaskState;
use kiq_examples::{faults, math};
use support::{redis_and_broker, wait_for_state, Workers};

const WAIT: Duration = Duration::from_secs(30);

async fn listed(broker: &kiq::Broker, state: TaskState, queue: Option<&str>) -> Vec<String> {
    broker
        .inspector()
        .list_tasks(state, queue, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

fn states(r: &kiq::TaskRecord) -> Vec<TaskState> {
    r.history.iter().map(|h| h.state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_are_recorded_with_their_history_and_listed_by_state_and_queue() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 1, &["--queues", "default"]);

    let ok = math::add::kiq(&broker, 1, 2).await.unwrap();
    ok.wait_result(WAIT).await.unwrap();
    let r = ok.record().await.unwrap().unwrap();
    use TaskState::*;
    assert_eq!(states(&r), [Pending, Running, Succeeded]);
    assert!(r.started_at_ms.is_some() && r.trace.is_some());

    // Retries, then the dead letters: every attempt is in the history.
    let dead = faults::fail_until::kiq(&broker, 9).await.unwrap();
    assert!(dead.wait_result(WAIT).await.is_err());
    let r = dead.record().await.unwrap().unwrap();
    assert_eq!(r.state, Dead);
    assert_eq!(
        states(&r),
        [Pending, Running, Retrying, Running, Retrying, Running, Retrying, Running, Dead]
    );
    assert_eq!(r.history.last().unwrap().attempt, 3);

    // A failure with no retries is failed, not dead.
    let failed = faults::flaky::kiq(&broker, "no".into()).await.unwrap();
    assert!(failed.wait_result(WAIT).await.is_err());

    // Running, pending on a queue no worker reads, scheduled for later.
    let running = faults::nap::kiq(&broker, 5_000).await.unwrap();
    assert!(wait_for_state(&broker, running.id(), Running).await);
    let pending = math::add::kicker()
        .queue("idle")
        .kiq(&broker, (1, 1))
        .await
        .unwrap();
    let scheduled = math::add::kicker()
        .queue("idle")
        .delay(Duration::from_secs(600))
        .kiq(&broker, (1, 1))
        .await
        .unwrap();

    assert!(listed(&broker, Succeeded, Some("default"))
        .await
        .contains(&ok.id().to_string()));
    assert!(listed(&broker, Dead, None)
        .await
        .contains(&dead.id().to_string()));
    assert!(listed(&broker, Failed, None)
        .await
        .contains(&failed.id().to_string()));
    assert!(!listed(&broker, Failed, None)
        .await
        .contains(&dead.id().to_string()));
    assert_eq!(
        listed(&broker, Running, None).await,
        [running.id().to_string()]
    );
    assert_eq!(
        listed(&broker, Pending, Some("idle")).await,
        [pending.id().to_string()]
    );
    assert!(listed(&broker, Pending, Some("default")).await.is_empty());
    assert_eq!(
        listed(&broker, Scheduled, None).await,
        [scheduled.id().to_string()]
    );
    assert!(listed(&broker, Succeeded, Some("idle")).await.is_empty());
    // A cancelled task is listed as such at once, even before any worker sees its message.
    let cancelled = math::add::kicker()
        .queue("idle")
        .delay(Duration::from_secs(600))
        .kiq(&broker, (2, 2))
        .await
        .unwrap();
    cancelled.cancel().await.unwrap();
    assert_eq!(
        listed(&broker, Cancelled, Some("idle")).await,
        [cancelled.id().to_string()]
    );

    // The CLI shows the same.
    let run = |args: &[&str]| {
        let out = support::taskctl_at(&redis.url(), args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let shown = run(&["task", dead.id()]);
    assert!(
        shown.contains("retrying") && shown.contains("dead"),
        "{shown}"
    );
    let lines = run(&["list", "--state", "dead", "--json"]);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], dead.id());
    let table = run(&["list", "--state", "running"]);
    assert!(table.contains(running.id()), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_task_indexes_are_trimmed_to_the_result_ttl() {
    let (redis, _) = redis_and_broker().await;
    let broker = kiq::Broker::from_config(
        kiq::BrokerConfig::new(redis.url()).result_ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let _w = Workers::start(
        &redis.url(),
        1,
        &["--queues", "default", "--result-ttl", "1s"],
    );
    let hs = math::add::kiq_many(&broker, (0..20).map(|i| (i, i)))
        .await
        .unwrap();
    for h in &hs {
        h.wait_result(WAIT).await.unwrap();
    }
    let count = || {
        redis
            .command("ZCARD {kiq:default}:finished:succeeded")
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(count(), ":20");
    // Once older than the result TTL, a trim drops them (their records have expired too).
    let deadline = Instant::now() + WAIT;
    while count() != ":0" && Instant::now() < deadline {
        broker
            .consumer("janitor")
            .trim_indexes("default")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_travels_from_the_producer_to_the_worker() {
    use kiq::broker::trace_context::{self, TraceParent};
    let (redis, broker) = redis_and_broker().await;
    let w = Workers::start(&redis.url(), 1, &["--queues", "default", "--trace-tasks"]);
    // The producer is inside a trace (say, the HTTP request it serves).
    let parent =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let (single, chain) = trace_context::scope(parent, async {
        let single = math::add::kiq(&broker, 1, 2).await.unwrap();
        let chain = math::add::call(1, 2)
            .then(math::double::link())
            .kiq(&broker)
            .await
            .unwrap();
        (single, chain)
    })
    .await;
    single.wait_result(WAIT).await.unwrap();
    chain.wait_result(WAIT).await.unwrap();
    for h in [single.id(), chain.id()] {
        let r = broker.record(h).await.unwrap().unwrap();
        let exec = TraceParent::parse(r.trace.as_deref().unwrap()).unwrap();
        assert_eq!(
            exec.trace_id, parent.trace_id,
            "the execution joins the trace"
        );
        assert_ne!(exec.span_id, parent.span_id, "as a span of its own");
    }
    // The worker's task span carries the ids, so its logs join the trace too.
    assert!(kiq_testkit::wait_until(Duration::from_secs(10), || w
        .log_text()
        .contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736")));
    // Outside any trace, each dispatch starts a new one.
    let lone = math::add::kiq(&broker, 1, 1).await.unwrap();
    lone.wait_result(WAIT).await.unwrap();
    let r = lone.record().await.unwrap().unwrap();
    let t = TraceParent::parse(r.trace.as_deref().unwrap()).unwrap();
    assert_ne!(t.trace_id, parent.trace_id);
}

/// A queue spread over partitions: its tasks land on every partition, each partition is
/// listed with its numbers (and its node on a cluster), unique keys, cancellation, chains and
/// a group's callback behave as on a queue of one partition, and workers start reading the
/// partitions a queue gains while they run. Lowering the count strands nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_its_tasks_and_keeps_every_guarantee() {
    use std::collections::BTreeMap;

    let (redis, broker) = redis_and_broker().await;
    let inspector = broker.inspector();
    let (before, after) = inspector.set_partitions("default", 3).await.unwrap();
    assert_eq!((before.spread, after.spread, after.names.len()), (1, 3, 3));
    assert_eq!(after.names[0], "default");
    let names = after.names.clone();
    assert!(inspector.set_partitions("default", 0).await.is_err());
    assert!(inspector.set_partitions("no{tag}", 2).await.is_err());

    // Dispatched before any worker runs, so that they wait where they landed.
    let mut handles = Vec::new();
    for i in 0..60 {
        handles.push(math::add::kiq(&broker, i, 1).await.unwrap());
    }
    // One key is checked on one partition: a second dispatch gets the first one's id.
    let unique = |n| {
        math::add::kicker()
            .unique("partitioned-unique", Duration::from_secs(60))
            .kiq(&broker, (n, n))
    };
    let first = unique(1).await.unwrap();
    let second = unique(2).await.unwrap();
    assert_eq!(first.id(), second.id());
    // A cancelled pending task never runs, whichever partition it waits on.
    let cancelled = math::add::kiq(&broker, 100, 1).await.unwrap();
    assert_eq!(
        cancelled.cancel().await.unwrap(),
        kiq::CancelOutcome::Cancelled
    );

    let stats = inspector.all_queue_stats().await.unwrap();
    let q = stats.iter().find(|q| q.queue == "default").unwrap();
    assert_eq!(q.waiting, 62, "{q:?}");
    let mut listed_names: Vec<String> = q.partitions.iter().map(|p| p.queue.clone()).collect();
    listed_names.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(listed_names, sorted);
    assert!(q.partitions.iter().all(|p| p.waiting > 0), "{q:?}");
    assert_eq!(
        q.partitions.iter().map(|p| p.waiting).sum::<u64>(),
        q.waiting
    );
    let on_cluster = redis.topology() == kiq_testkit::Topology::Cluster;
    assert_eq!(
        q.partitions.iter().all(|p| p.node.is_some()),
        on_cluster,
        "{q:?}"
    );
    // On a cluster (3 masters) each partition was placed on another master.
    if on_cluster {
        let mut nodes: Vec<&str> = q
            .partitions
            .iter()
            .filter_map(|p| p.node.as_deref())
            .collect();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 3, "{q:?}");
    }
    // The queue registry shows the queue once, partitions folded in.
    let queues = inspector.queue_names().await.unwrap();
    assert_eq!(
        queues.iter().filter(|n| n.starts_with("default")).count(),
        1
    );

    let _w = Workers::start(&redis.url(), 2, &["--queues", "default"]);
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.wait_result(WAIT).await.unwrap(), i as i64 + 1);
        let r = h.record().await.unwrap().unwrap();
        *landed.entry(r.queue).or_default() += 1;
    }
    println!("60 tasks over 3 partitions: {landed:?}");
    assert_eq!(landed.keys().cloned().collect::<Vec<_>>(), sorted);
    assert_eq!(first.wait_result(WAIT).await.unwrap(), 2);
    // The key is released when its task finishes (in its partition's slot).
    let third = unique(3).await.unwrap();
    assert_ne!(third.id(), first.id());
    assert_eq!(third.wait_result(WAIT).await.unwrap(), 6);
    // Listed by queue: the queue's partitions together.
    let done = listed(&broker, TaskState::Succeeded, Some("default")).await;
    assert!(done.len() >= 62, "{}", done.len());

    // A chain's steps and a group's callback land on partitions too, each sent once.
    let last = math::add::call(1, 2)
        .then(math::double::link())
        .then(math::double::link())
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(last.wait_result(WAIT).await.unwrap(), 12);
    let (members, sum) = kiq::group((1..=30).map(|i| math::add::call(i, 0)))
        .then(math::total::link())
        .kiq(&broker)
        .await
        .unwrap();
    assert_eq!(sum.wait_result(WAIT).await.unwrap(), 465);
    assert_eq!(members.handles.len(), 30);

    // The cancelled task never ran.
    let r = cancelled.record().await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Cancelled);
    assert!(r.started_at_ms.is_none());

    // More partitions while the workers run: they read the new ones within seconds.
    let (_, grown) = inspector.set_partitions("default", 5).await.unwrap();
    assert_eq!(grown.names[..3], names[..]);
    let mut more = Vec::new();
    for i in 0..50 {
        more.push(math::add::kiq(&broker, i, 2).await.unwrap());
    }
    let mut new_partitions = 0;
    for (i, h) in more.iter().enumerate() {
        assert_eq!(h.wait_result(WAIT).await.unwrap(), i as i64 + 2);
        let q = h.record().await.unwrap().unwrap().queue;
        new_partitions += usize::from(grown.names[3..].contains(&q));
    }
    assert!(new_partitions > 0, "no task landed on the new partitions");

    // Fewer: producers use 2, workers still read all 5.
    let (_, after) = inspector.set_partitions("default", 2).await.unwrap();
    assert_eq!((after.spread, after.names.len()), (2, 5));
    let shown = inspector.partitions().await.unwrap();
    assert_eq!(shown, [("default".to_string(), after)]);
    let out = support::taskctl_at(&redis.url(), &["queue", "partitions", "default"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("2 partition(s); workers read 5"),
        "{text}"
    );
    let out = support::taskctl_at(&redis.url(), &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(grown.names[4].as_str()), "{text}");
}
