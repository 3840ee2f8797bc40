//! `taskctl result` and `taskctl wait`: wait for tasks and print how they ended.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiq_broker::{TaskRecord, TaskState, WaitError};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// Task ids; `-` reads them from stdin, one per line.
    #[arg(required = true)]
    ids: Vec<String>,
    /// How long to wait for all of them.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// One JSON line per task instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ResultArgs {
    /// The task id.
    id: String,
    /// Wait this long for the task to finish.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
}

pub(crate) async fn result(global: &GlobalArgs, args: ResultArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    match args.wait {
        Some(timeout) => print_outcome(broker.codec(), broker.wait_record(&args.id, timeout).await),
        None => match broker.record(&args.id).await? {
            None => print_outcome(broker.codec(), Err(WaitError::NotFound(args.id))),
            Some(r) if r.state.is_final() => print_outcome(broker.codec(), Ok(r)),
            Some(r) => {
                println!("{}", serde_json::json!({ "id": args.id, "state": r.state }));
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

pub(crate) async fn wait_many(global: &GlobalArgs, args: WaitArgs) -> anyhow::Result<ExitCode> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut ids = Vec::new();
    for id in args.ids {
        if id == "-" {
            for line in std::io::stdin().lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    ids.push(line.trim().to_string());
                }
            }
        } else {
            ids.push(id);
        }
    }
    let broker = global.connect().await?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut pending: FuturesUnordered<_> = ids
        .iter()
        .map(|id| {
            let broker = broker.clone();
            let id = id.clone();
            async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let r = broker.wait_record(&id, left).await;
                (id, r)
            }
        })
        .collect();
    let (mut ok, mut failed, mut late, mut done) = (0usize, 0usize, 0usize, 0usize);
    let mut unknown = 0usize;
    while let Some((id, r)) = pending.next().await {
        done += 1;
        super::progress::show("waiting", done, ids.len());
        let (state, error) = match &r {
            Ok(rec) if rec.state == TaskState::Succeeded => {
                ok += 1;
                ("succeeded".to_string(), None)
            }
            Ok(rec) => {
                failed += 1;
                (
                    rec.state.as_str().to_string(),
                    rec.failure.as_ref().map(|f| f.to_string()),
                )
            }
            Err(WaitError::Timeout { hint }) => {
                late += 1;
                ("timeout".into(), hint.clone())
            }
            Err(e @ WaitError::NotFound(_)) => {
                unknown += 1;
                ("unknown".into(), Some(e.to_string()))
            }
            Err(e) => {
                failed += 1;
                ("error".into(), Some(e.to_string()))
            }
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "id": id, "state": state, "error": error })
            );
        }
    }
    if !args.json {
        println!("{ok} succeeded, {failed} failed, {late} still running after the timeout");
        if unknown > 0 {
            println!("{unknown} unknown (no such task, or its result expired)");
        }
    }
    // An unknown id is bad input (exit 2), as for `taskctl result`.
    Ok(if unknown > 0 {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else if late > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn print_outcome(
    codec: kiq_broker::ValueCodec,
    outcome: Result<TaskRecord, WaitError>,
) -> anyhow::Result<ExitCode> {
    match outcome {
        Ok(r) if r.state == TaskState::Succeeded => {
            let value = match &r.output {
                Some(bytes) => codec.to_json(bytes)?,
                None => serde_json::Value::Null,
            };
            println!("{value}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            let f = r.failure.map(|f| f.to_string()).unwrap_or_default();
            eprintln!("task failed: {f}");
            Ok(ExitCode::FAILURE)
        }
        Err(WaitError::Failed(f)) => {
            eprintln!("task failed: {f}");
            Ok(ExitCode::FAILURE)
        }
        Err(e @ WaitError::Timeout { .. }) => {
            eprintln!("{e}");
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e.into()),
    }
}
