//! `taskctl status`: queues, workers and the active scheduler at a glance.

use std::process::ExitCode;

use clap::Args;
use kiq_broker::envelope::now_ms;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// A worker whose last heartbeat is older than this is forgotten.
const FORGET_MS: u64 = 3_600_000;

pub(crate) async fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    // Priority lanes are summed into their queue.
    let queues = broker.inspector().all_queue_stats().await?;
    let workers = broker.inspector().workers(FORGET_MS).await?;
    let leader = broker.inspector().scheduler_lease().await?;
    let now = now_ms();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "queues": queues,
                "workers": workers,
                "scheduler": leader.as_ref().map(|l| serde_json::json!({
                    "holder": l.holder, "token": l.token, "lease_expires_in_ms": l.ttl_ms,
                })),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("QUEUES");
    // On a cluster, each queue (and each partition) names the node serving its slot.
    let nodes = queues.iter().any(|q| q.node.is_some());
    // Each line is trimmed, so that without a node column no line ends in blanks.
    let line = |text: String| println!("{}", text.trim_end());
    let row = |name: &str, q: &kiq_broker::QueueStats| {
        let node = if nodes {
            q.node.as_deref().unwrap_or("?")
        } else {
            ""
        };
        line(format!(
            "  {:<20} {:>10} {:>10} {:>10} {:>10} {:>8}  {}",
            name, q.waiting, q.in_flight, q.delayed, q.dead, q.depth, node
        ));
    };
    line(format!(
        "  {:<20} {:>10} {:>10} {:>10} {:>10} {:>8}  {}",
        "queue",
        "waiting",
        "in flight",
        "delayed",
        "dead",
        "depth",
        if nodes { "node" } else { "" }
    ));
    for q in &queues {
        row(&q.queue, q);
        // A partitioned queue's partitions, below it.
        for p in &q.partitions {
            row(&format!("  {}", p.queue), p);
        }
    }
    println!();
    println!("WORKERS");
    println!(
        "  {:<20} {:>8} {:>6} {:>9} {:<24} {:<16}",
        "host", "pid", "conc.", "in flight", "queues", "last heartbeat"
    );
    for w in &workers {
        let age = now.saturating_sub(w.heartbeat_ms);
        let beat = if age > kiq_broker::WorkerInfo::LIVE_MS {
            format!("{}s ago (stale)", age / 1000)
        } else {
            format!("{:.1}s ago", age as f64 / 1000.0)
        };
        println!(
            "  {:<20} {:>8} {:>6} {:>9} {:<24} {:<16}",
            w.host,
            w.pid,
            w.concurrency,
            w.in_flight,
            w.queues.join(","),
            beat
        );
    }
    if workers.is_empty() {
        println!("  (none)");
    }
    println!();
    println!("SCHEDULER");
    match leader {
        Some(l) => println!(
            "  active: {} (token {}), lease expires in {:.1}s",
            l.holder,
            l.token,
            l.ttl_ms as f64 / 1000.0
        ),
        None => println!("  no active scheduler"),
    }
    Ok(ExitCode::SUCCESS)
}
