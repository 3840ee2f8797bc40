//! Serving Taskiq messages: the pure part. One entry of a Taskiq stream becomes a kiq dispatch
//! of the named task (keyword arguments bound by parameter name, Taskiq's labels honoured),
//! a task left to Python workers, or a dead letter with its reason and an error result the
//! Python caller receives instead of waiting for ever.

use std::collections::BTreeMap;
use std::time::Duration;

use kiq_broker::envelope::{due_in, duration_ms, validate_task_id};
use kiq_broker::taskiq::{
    bind_args, TaskiqException, TaskiqMessage, TaskiqReply, TaskiqResult, TaskiqStream,
};
use kiq_broker::{Priority, RetryPolicy, ValueCodec};
use serde_json::Value;

use crate::registry::{Registry, TaskDef};

/// What becomes of one Taskiq entry.
#[derive(Debug)]
pub enum Translated {
    /// Hand it on to the task's kiq queue.
    Forward(Box<Forward>),
    /// A task this worker does not run, on a stream Python workers share: passed back to the
    /// stream for them.
    PassBack {
        /// The task name.
        task: String,
    },
    /// It can never run: a dead letter, and (when its id is usable) an error result.
    Dead(Box<Refusal>),
}

/// A Taskiq message as a kiq dispatch.
#[derive(Debug)]
pub struct Forward {
    /// The task.
    pub def: &'static TaskDef,
    /// The task id (Taskiq's).
    pub task_id: String,
    /// The arguments, positional, encoded by the broker's codec.
    pub args: Vec<u8>,
    /// Taskiq's labels, as strings.
    pub labels: BTreeMap<String, String>,
    /// From `retry_on_error` / `max_retries`.
    pub retry: Option<RetryPolicy>,
    /// From `timeout`.
    pub timeout: Option<Duration>,
    /// From `delay`.
    pub due_ms: Option<u64>,
    /// From `priority`: above 0 high, below 0 low.
    pub priority: Priority,
    /// Where its result goes for Python.
    pub reply: TaskiqReply,
}

/// Why a Taskiq entry is dead-lettered.
#[derive(Debug)]
pub struct Refusal {
    /// `malformed`, `unknown_task`, `bad_arguments`, `too_large`.
    pub reason: &'static str,
    /// For people.
    pub error: String,
    /// The task id, if the message had one.
    pub task_id: Option<String>,
    /// The task name, if the message had one.
    pub task: Option<String>,
    /// The error result to write for the Python caller: `(key, bytes, ttl ms)`.
    pub result: Option<(String, Vec<u8>, Option<u64>)>,
}

/// What the translation needs from the worker.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The tasks this worker runs.
    pub registry: &'a Registry,
    /// The stream read.
    pub stream: &'a TaskiqStream,
    /// The broker's codec.
    pub codec: ValueCodec,
    /// The largest message accepted.
    pub max_payload: usize,
    /// How long results are kept when the stream does not say (ms).
    pub default_ttl_ms: u64,
}

impl Context<'_> {
    fn ttl_ms(&self) -> u64 {
        self.stream
            .result_ttl
            .map(duration_ms)
            .unwrap_or(self.default_ttl_ms)
    }

    fn refuse(
        &self,
        reason: &'static str,
        exc_type: &str,
        error: String,
        msg: Option<&TaskiqMessage>,
    ) -> Translated {
        let usable_id = msg.filter(|m| validate_task_id(&m.task_id));
        let result = usable_id.map(|m| {
            let r = TaskiqResult {
                is_err: true,
                log: None,
                return_value: Value::Null,
                execution_time: 0.0,
                labels: m.typed_labels(),
                error: Some(TaskiqException::kiq(exc_type, &error)),
            };
            (
                self.stream.result_key(&m.task_id),
                r.encode(self.stream.results),
                Some(self.ttl_ms()),
            )
        });
        Translated::Dead(Box::new(Refusal {
            reason,
            error,
            task_id: msg.map(|m| m.task_id.clone()),
            task: msg.map(|m| m.task_name.clone()),
            result,
        }))
    }

    /// Translates one entry's `data` (passed back for Python `hops` times already).
    pub fn translate(&self, data: Option<&[u8]>, hops: u64) -> Translated {
        let Some(data) = data else {
            return self.refuse(
                "malformed",
                "MalformedMessage",
                "the entry has no `data` field".into(),
                None,
            );
        };
        let msg = match TaskiqMessage::parse(data) {
            Ok(m) => m,
            Err(e) => return self.refuse("malformed", "MalformedMessage", e.to_string(), None),
        };
        // A task kiq does not run, on a stream Python workers share, is theirs: kiq's own
        // limits (payload size, task ids) apply only to what kiq will run.
        let Some(def) = self.registry.get(&msg.task_name) else {
            if self.stream.shared && hops < self.stream.max_hops {
                return Translated::PassBack {
                    task: msg.task_name,
                };
            }
            let error = if self.stream.shared {
                format!(
                    "no worker serves task {:?}: no kiq worker runs it, and no Python worker took it in {hops} passes",
                    msg.task_name
                )
            } else {
                format!("no kiq worker serves task {:?} (and the stream is not declared shared with Python workers)", msg.task_name)
            };
            return self.refuse("unknown_task", "UnknownTask", error, Some(&msg));
        };
        if data.len() > self.max_payload {
            return self.refuse(
                "too_large",
                "MessageTooLarge",
                format!(
                    "the message is {} bytes, over the {}-byte limit",
                    data.len(),
                    self.max_payload
                ),
                Some(&msg),
            );
        }
        if !validate_task_id(&msg.task_id) {
            // No result either: an id kiq refuses is not a key kiq writes.
            return self.refuse(
                "malformed",
                "MalformedMessage",
                format!(
                    "invalid task id {:?}: kiq takes 1-128 of A-Z a-z 0-9 - _ . :",
                    msg.task_id
                ),
                None,
            );
        }
        let known = match msg.known_labels() {
            Ok(k) => k,
            Err(e) => return self.refuse("malformed", "MalformedMessage", e.0, Some(&msg)),
        };
        let bound = match bind_args(def.params, &msg.args, &msg.kwargs) {
            Ok(b) => b,
            Err(e) => {
                return self.refuse(
                    "bad_arguments",
                    "BadArguments",
                    format!("{}() {e}", def.name),
                    Some(&msg),
                )
            }
        };
        // A task with no parameters takes an empty array; a one-parameter task a 1-tuple.
        let args = match self.codec.from_json(&Value::Array(bound)) {
            Ok(a) => a,
            Err(e) => {
                return self.refuse("bad_arguments", "BadArguments", e.to_string(), Some(&msg))
            }
        };
        let secs = |s: f64| Duration::try_from_secs_f64(s).ok();
        let timeout = match known.timeout_s.map(secs) {
            Some(None) => {
                return self.refuse(
                    "malformed",
                    "MalformedMessage",
                    "label timeout is out of range".into(),
                    Some(&msg),
                )
            }
            Some(Some(t)) if !t.is_zero() => Some(t),
            _ => None,
        };
        let due_ms = match known.delay_s.map(secs) {
            Some(None) => {
                return self.refuse(
                    "malformed",
                    "MalformedMessage",
                    "label delay is out of range".into(),
                    Some(&msg),
                )
            }
            Some(Some(d)) if !d.is_zero() => Some(due_in(d)),
            _ => None,
        };
        let retry = match known.retry_on_error {
            Some(true) => Some(RetryPolicy {
                // Taskiq's SimpleRetryMiddleware retries 3 times by default.
                max_retries: known.max_retries.unwrap_or(3),
                ..def.retry
            }),
            Some(false) => Some(RetryPolicy {
                max_retries: 0,
                ..def.retry
            }),
            None => known.max_retries.map(|n| RetryPolicy {
                max_retries: n,
                ..def.retry
            }),
        };
        let priority = match known.priority {
            Some(p) if p > 0 => Priority::High,
            Some(p) if p < 0 => Priority::Low,
            _ => Priority::Normal,
        };
        let labels = msg
            .labels
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect();
        let typed = Value::Object(msg.typed_labels()).to_string();
        Translated::Forward(Box::new(Forward {
            def,
            reply: TaskiqReply {
                key: self.stream.result_key(&msg.task_id),
                format: self.stream.results,
                ttl_ms: Some(self.ttl_ms()),
                labels: typed,
            },
            task_id: msg.task_id,
            args,
            labels,
            retry,
            timeout,
            due_ms,
            priority,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{HandlerFuture, Invocation};
    use kiq_broker::taskiq::ResultFormat;

    fn nop(_: Invocation) -> HandlerFuture {
        Box::pin(async { Ok(Vec::new()) })
    }

    static ADD: TaskDef = TaskDef {
        name: "interop.add",
        queue: "interop",
        timeout: None,
        retry: RetryPolicy::NONE,
        visibility_timeout: None,
        schedule: None,
        handler: nop,
        params: &["a", "b"],
        location: "t.rs:1",
    };

    fn ctx<'a>(registry: &'a Registry, stream: &'a TaskiqStream) -> Context<'a> {
        Context {
            registry,
            stream,
            codec: ValueCodec::MsgPack,
            max_payload: 1024,
            default_ttl_ms: 60_000,
        }
    }

    fn msg(body: &str) -> Vec<u8> {
        format!(r#"{{"task_id": "6e7771d2265d46b79673ee3dbc46e761", {body}}}"#).into_bytes()
    }

    #[test]
    fn binds_kwargs_and_honours_labels() {
        let reg = Registry::from_defs([&ADD]).unwrap();
        let stream = TaskiqStream::default();
        let data = msg(
            r#""task_name": "interop.add", "labels": {"retry_on_error": "True", "max_retries": "2", "timeout": "1.5", "priority": "1"}, "labels_types": {"retry_on_error": 5, "max_retries": 2}, "args": [5], "kwargs": {"b": 6}"#,
        );
        let Translated::Forward(f) = ctx(&reg, &stream).translate(Some(&data), 1) else {
            panic!("not forwarded")
        };
        let args: (i64, i64) = ValueCodec::MsgPack.decode(&f.args).unwrap();
        assert_eq!(args, (5, 6));
        assert_eq!(f.retry.map(|r| r.max_retries), Some(2));
        assert_eq!(f.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(f.priority, Priority::High);
        assert_eq!(f.reply.key, "6e7771d2265d46b79673ee3dbc46e761");
        assert!(
            f.reply.labels.contains(r#""retry_on_error":true"#),
            "{}",
            f.reply.labels
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason_and_a_result_for_python() {
        let reg = Registry::from_defs([&ADD]).unwrap();
        let stream = TaskiqStream::default().results(ResultFormat::Json);
        let c = ctx(&reg, &stream);
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "malformed"),
            (
                &msg(r#""task_name": "nope", "labels": {}, "args": [], "kwargs": {}"#),
                "unknown_task",
            ),
            (
                &msg(
                    r#""task_name": "interop.add", "labels": {}, "args": [1], "kwargs": {"c": 2}"#,
                ),
                "bad_arguments",
            ),
            (
                &msg(
                    r#""task_name": "interop.add", "labels": {"timeout": "soon"}, "args": [1, 2], "kwargs": {}"#,
                ),
                "malformed",
            ),
            (
                &msg(
                    r#""task_name": "interop.add", "labels": {"delay": "1e300"}, "args": [1, 2], "kwargs": {}"#,
                ),
                "malformed",
            ),
            (
                &msg(&format!(
                    r#""task_name": "interop.add", "labels": {{}}, "args": ["{}"], "kwargs": {{}}"#,
                    "x".repeat(2000)
                )),
                "too_large",
            ),
        ];
        for (data, reason) in cases {
            let Translated::Dead(d) = c.translate(Some(data), 1) else {
                panic!("{reason}: not refused")
            };
            assert_eq!(d.reason, reason, "{}", d.error);
            if reason != "malformed" || data != b"not json" {
                let (key, bytes, _) = d.result.expect("an error result");
                assert_eq!(key, "6e7771d2265d46b79673ee3dbc46e761");
                let r = TaskiqResult::decode(&bytes, ResultFormat::Json).unwrap();
                assert!(r.is_err);
            }
        }
    }

    #[test]
    fn a_shared_stream_passes_unknown_tasks_back_until_no_python_worker_takes_them() {
        let reg = Registry::from_defs([&ADD]).unwrap();
        let stream = TaskiqStream::default().shared(true);
        let data = msg(r#""task_name": "py.only", "labels": {}, "args": [], "kwargs": {}"#);
        assert!(matches!(
            ctx(&reg, &stream).translate(Some(&data), 0),
            Translated::PassBack { .. }
        ));
        assert!(matches!(
            ctx(&reg, &stream).translate(Some(&data), 30),
            Translated::Dead(_)
        ));
        // kiq's limits are not Python's: a big message, or an id kiq would refuse, of a task
        // kiq does not run is passed back too.
        let big = format!(
            r#"{{"task_id": "py/custom id", "task_name": "py.only", "labels": {{}}, "args": ["{}"], "kwargs": {{}}}}"#,
            "x".repeat(4000)
        );
        assert!(matches!(
            ctx(&reg, &stream).translate(Some(big.as_bytes()), 0),
            Translated::PassBack { .. }
        ));
    }
}
