//! `taskctl kiq`: dispatch a task by name from a shell.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiq_broker::RawDispatch;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct KiqArgs {
    /// The task name (see `taskctl tasks`).
    task: String,
    /// The arguments as a JSON array, e.g. '[2, 3]'.
    #[arg(long, short = 'a', default_value = "[]")]
    args: String,
    /// Queue to send to (default: the task's queue if it is linked in, else `default`).
    #[arg(long, short = 'q')]
    queue: Option<String>,
    /// Use this task id instead of a fresh one.
    #[arg(long)]
    task_id: Option<String>,
    /// Priority: critical, high, normal or low.
    #[arg(long, short = 'p', default_value = "normal")]
    priority: kiq_broker::Priority,
    /// Start no earlier than this from now, e.g. `30s`, `5m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Wait this long for the result and print it.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    /// Send even if no live worker runs a task of this name (one may start later).
    #[arg(long)]
    force: bool,
}

/// `--args` as the task's encoded arguments: a JSON array, or a clear error.
fn parse_args(args: &str, codec: kiq_broker::ValueCodec) -> anyhow::Result<Vec<u8>> {
    let json: serde_json::Value =
        serde_json::from_str(args).map_err(|e| anyhow::anyhow!("--args must be JSON: {e}"))?;
    if !json.is_array() {
        anyhow::bail!("--args must be a JSON array of the task's arguments, e.g. '[2, 3]'");
    }
    Ok(codec.from_json(&json)?)
}

pub(crate) async fn kiq(global: &GlobalArgs, args: KiqArgs) -> anyhow::Result<ExitCode> {
    // Checked before connecting: a typo is reported even when Redis is down.
    parse_args(&args.args, kiq_broker::ValueCodec::MsgPack)?;
    let linked_queue = kiq_worker::Registry::linked()
        .ok()
        .and_then(|r| r.get(&args.task).map(|d| d.queue));
    let queue = args.queue.as_deref().or(linked_queue).unwrap_or("default");
    let broker = global.connect().await?;
    if !args.force {
        // The names live workers run: a name none of them knows would wait in its queue (or
        // dead-letter as unknown) while the shell said all was well.
        let known = broker.inspector().advertised_tasks().await?;
        if known.is_empty() {
            eprintln!(
                "taskctl: no live worker says which tasks it runs: sending {:?} unchecked",
                args.task
            );
        } else if !known.contains(&args.task) {
            eprintln!(
                "taskctl: no live worker runs a task named {:?}; they run:\n  {}\n\
                 (--force sends it anyway, for a worker that will start later)",
                args.task,
                known.join("\n  ")
            );
            return Ok(ExitCode::from(2));
        }
    }
    let encoded = parse_args(&args.args, broker.codec())?;
    let msg = broker.prepare_raw(RawDispatch {
        task: &args.task,
        queue,
        args: encoded,
        task_id: args.task_id.as_deref(),
        labels: Default::default(),
        retry: None,
        timeout: None,
        due_ms: args.delay.map(kiq_broker::envelope::due_in),
        unique_key: None,
        priority: args.priority,
    })?;
    let id = broker.enqueue(msg).await?;
    println!("{id}");
    match args.wait {
        None => Ok(ExitCode::SUCCESS),
        Some(timeout) => {
            super::wait::print_outcome(broker.codec(), broker.wait_record(&id, timeout).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_args;
    use kiq_broker::ValueCodec;
    use proptest::prelude::*;

    proptest! {
        /// `--args` is whatever a shell passed: any string, and any JSON, is encoded or
        /// refused with a message, never a panic.
        #[test]
        fn any_args_string_is_encoded_or_refused(
            s in ".{0,256}",
            json in kiq_testkit::arb::json(),
        ) {
            let _ = parse_args(&s, ValueCodec::MsgPack);
            match parse_args(&json.to_string(), ValueCodec::MsgPack) {
                Ok(_) => prop_assert!(json.is_array()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn non_arrays_are_refused_with_the_expected_form() {
        let e = parse_args("{\"a\": 1}", ValueCodec::MsgPack).unwrap_err();
        assert!(e.to_string().contains("JSON array"), "{e}");
        let e = parse_args("[1,", ValueCodec::MsgPack).unwrap_err();
        assert!(e.to_string().starts_with("--args must be JSON"), "{e}");
        assert!(parse_args("[2, 3]", ValueCodec::MsgPack).is_ok());
    }
}
