//! Dispatch: checking a call, making its envelope, and handing it to the backend.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::broker::Broker;
use super::kicker::Kicker;
use crate::error::DispatchError;
use crate::model::envelope::{self, Envelope, ENVELOPE_VERSION};
use crate::model::record::TaskRecord;
use crate::model::trace_context::ProducerSpan;

/// A message ready to be enqueued: encoded and checked, not yet sent.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The task id.
    pub id: String,
    /// The target queue.
    pub queue: String,
    /// The lane of the queue that carries its priority (see [`crate::priority`]).
    pub lane: String,
    /// The task name.
    pub task: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// The encoded pending record (shared by every message of a batch: it is the same for all).
    pub pending_record: Arc<Vec<u8>>,
    /// When it is due (ms since the epoch), for a delayed dispatch.
    pub due_ms: Option<u64>,
    /// The dispatch's producer span (OpenTelemetry), ended once the message is sent.
    pub(crate) span: ProducerSpan,
}

/// A dispatch by task name with pre-encoded arguments (see [`Broker::prepare_raw`]).
#[derive(Debug, Clone)]
pub struct RawDispatch<'a> {
    /// The task name.
    pub task: &'a str,
    /// The target queue.
    pub queue: &'a str,
    /// The argument tuple, encoded by the wire codec.
    pub args: Vec<u8>,
    /// A caller-chosen task id, or `None` for a fresh one.
    pub task_id: Option<&'a str>,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// A retry policy overriding the task's own.
    pub retry: Option<crate::model::retry::RetryPolicy>,
    /// A per-attempt timeout overriding the task's own.
    pub timeout: Option<Duration>,
    /// Start no earlier than this (ms since the epoch).
    pub due_ms: Option<u64>,
    /// The uniqueness key the task will hold (set by [`Kicker::unique`]).
    pub unique_key: Option<String>,
    /// Its priority.
    pub priority: crate::model::priority::Priority,
}

impl Broker {
    /// Encodes and checks one dispatch without sending it.
    pub fn prepare<A: Serialize, T>(
        &self,
        kicker: &Kicker<A, T>,
        args: &A,
    ) -> Result<OutgoingMessage, DispatchError> {
        let args = self
            .codec()
            .encode(args)
            .map_err(|error| DispatchError::Encode {
                task: kicker.spec.name.to_string(),
                error,
            })?;
        self.prepare_raw(kicker.raw_dispatch(args))
    }

    /// Prepares one message per item of `args` with the same options: the pending record (the
    /// same for all) is encoded once.
    pub fn prepare_batch<A: Serialize, T>(
        &self,
        kicker: &Kicker<A, T>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Vec<OutgoingMessage>, DispatchError> {
        let task = kicker.spec.name;
        let queue = kicker.queue.as_deref().unwrap_or(kicker.spec.queue);
        let now = envelope::now_ms();
        let delayed = kicker.due.is_some_and(|d| d > now);
        let pending = Arc::new(
            self.wire()
                .encode_record(&TaskRecord::accepted(task, queue, now, delayed))
                .map_err(|error| DispatchError::Encode {
                    task: task.to_string(),
                    error,
                })?,
        );
        args.into_iter()
            .map(|a| {
                let args = self
                    .codec()
                    .encode(&a)
                    .map_err(|error| DispatchError::Encode {
                        task: task.to_string(),
                        error,
                    })?;
                self.build(kicker.raw_dispatch(args), now, Some(pending.clone()))
            })
            .collect()
    }

    /// Like [`Broker::prepare`], for a task known only by name, with arguments already encoded
    /// by the wire codec (as one tuple).
    pub fn prepare_raw(&self, d: RawDispatch<'_>) -> Result<OutgoingMessage, DispatchError> {
        self.build(d, envelope::now_ms(), None)
    }

    fn build(
        &self,
        d: RawDispatch<'_>,
        now: u64,
        pending: Option<Arc<Vec<u8>>>,
    ) -> Result<OutgoingMessage, DispatchError> {
        let due_ms = d.due_ms;
        let envelope = self.envelope_for(d, now)?;
        self.outgoing(envelope, due_ms, pending)
    }

    /// Checks one dispatch and makes its envelope, passed through the dispatch layers.
    pub(crate) fn envelope_for(
        &self,
        d: RawDispatch<'_>,
        now: u64,
    ) -> Result<Envelope, DispatchError> {
        let RawDispatch {
            task,
            queue,
            args,
            task_id,
            labels,
            retry,
            timeout,
            due_ms,
            unique_key,
            priority,
        } = d;
        if task.is_empty() {
            return Err(DispatchError::Invalid {
                what: "task name",
                value: String::new(),
            });
        }
        if !valid_queue_name(queue) {
            return Err(DispatchError::Invalid {
                what: "queue name",
                value: queue.to_string(),
            });
        }
        // Durations a caller could get wrong by orders of magnitude are checked, not wrapped.
        if let Some(t) = timeout.filter(|t| *t > envelope::MAX_DELAY) {
            return Err(DispatchError::Invalid {
                what: "timeout (at most 10 years)",
                value: format!("{t:?}"),
            });
        }
        if let Some(due) =
            due_ms.filter(|d| *d > now.saturating_add(envelope::duration_ms(envelope::MAX_DELAY)))
        {
            return Err(DispatchError::Invalid {
                what: "delay (at most 10 years)",
                value: format!("due at {due} ms since the Unix epoch"),
            });
        }
        let id = match task_id {
            Some(id) if envelope::validate_task_id(id) => id.to_string(),
            Some(id) => {
                return Err(DispatchError::Invalid {
                    what: "task id",
                    value: id.to_string(),
                })
            }
            None => envelope::new_task_id(),
        };
        let mut envelope = Envelope {
            v: ENVELOPE_VERSION,
            id,
            task: task.to_string(),
            queue: queue.to_string(),
            args,
            labels,
            enqueued_at_ms: now,
            attempt: 0,
            retry,
            timeout_ms: timeout.map(envelope::duration_ms),
            unique_key,
            priority,
            due_ms: due_ms.filter(|d| *d > now),
            trace: Some(crate::model::trace_context::for_dispatch()),
            ..Envelope::default()
        };
        for layer in &self.config().dispatch_layers {
            layer
                .on_dispatch(&mut envelope)
                .map_err(|reason| DispatchError::Refused {
                    task: envelope.task.clone(),
                    reason,
                })?;
        }
        // A layer may have re-routed it: check the queue it ends up on.
        if !valid_queue_name(&envelope.queue) {
            return Err(DispatchError::Invalid {
                what: "queue name",
                value: envelope.queue.clone(),
            });
        }
        Ok(envelope)
    }

    /// Encodes `envelope` into a message, with its pending record (`pending` if given, else
    /// made here).
    pub(crate) fn outgoing(
        &self,
        mut envelope: Envelope,
        due_ms: Option<u64>,
        pending: Option<Arc<Vec<u8>>>,
    ) -> Result<OutgoingMessage, DispatchError> {
        let span = ProducerSpan::open(&mut envelope);
        let encode_err = |error| DispatchError::Encode {
            task: envelope.task.clone(),
            error,
        };
        envelope
            .check_limits()
            .map_err(|reason| DispatchError::OverLimit {
                task: envelope.task.clone(),
                reason,
            })?;
        let payload = self.wire().encode_envelope(&envelope).map_err(encode_err)?;
        let limit = self.config().max_payload_bytes;
        if payload.len() > limit {
            return Err(DispatchError::PayloadTooLarge {
                task: envelope.task.clone(),
                size: payload.len(),
                limit,
            });
        }
        let now = envelope.enqueued_at_ms;
        let due_ms = due_ms.filter(|d| *d > now);
        let pending_record = match pending {
            Some(p) => p,
            None => Arc::new(
                self.wire()
                    .encode_record(&TaskRecord::accepted(
                        &envelope.task,
                        &envelope.queue,
                        now,
                        due_ms.is_some(),
                    ))
                    .map_err(encode_err)?,
            ),
        };
        Ok(OutgoingMessage {
            id: envelope.id.clone(),
            lane: envelope.priority.lane(&envelope.queue),
            queue: envelope.queue,
            task: envelope.task,
            payload,
            pending_record,
            due_ms,
            span,
        })
    }

    /// Enqueues one prepared message: its pending record, then its stream entry, in one round
    /// trip. Returns the task id once Redis has accepted both.
    pub async fn enqueue(&self, msg: OutgoingMessage) -> Result<String, DispatchError> {
        let mut ids = self.enqueue_many(vec![msg]).await?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// Enqueues many prepared messages, pipelined. On error, some messages of the batch may
    /// have been enqueued; the error says which task the failure hit.
    pub async fn enqueue_many(
        &self,
        mut msgs: Vec<OutgoingMessage>,
    ) -> Result<Vec<String>, DispatchError> {
        let spans: Vec<ProducerSpan> = msgs
            .iter_mut()
            .map(|m| std::mem::take(&mut m.span))
            .collect();
        let r = self.backend().enqueue_many(self, msgs).await;
        finish_spans(spans, r.as_ref().err());
        r
    }

    /// Enqueues `msg` unless a task holding uniqueness `key` on its queue is pending or running;
    /// returns the id of the task that holds the key (this one, or the earlier one). The check
    /// and the enqueue are one atomic step.
    pub async fn enqueue_unique(
        &self,
        mut msg: OutgoingMessage,
        key: &str,
        ttl: Duration,
    ) -> Result<String, DispatchError> {
        if key.is_empty() || key.len() > 200 {
            return Err(DispatchError::Invalid {
                what: "unique key",
                value: key.to_string(),
            });
        }
        let span = std::mem::take(&mut msg.span);
        let r = self.backend().enqueue_unique(self, msg, key, ttl).await;
        finish_spans([span], r.as_ref().err());
        r
    }

    /// Enqueues `msg` at most once per its task id within `ttl`, whoever calls and however
    /// often: the idempotent enqueue a scheduler tick is delivered through. Returns whether
    /// this call enqueued it. Redis only.
    pub async fn enqueue_once(
        &self,
        msg: &OutgoingMessage,
        ttl: Duration,
    ) -> Result<bool, DispatchError> {
        let r = match self.backend().redis("an idempotent enqueue") {
            Ok(redis) => redis.enqueue_once(msg, ttl).await,
            Err(error) => Err(DispatchError::Broker {
                task: msg.task.clone(),
                id: Some(msg.id.clone()),
                error,
            }),
        };
        finish_spans([msg.span.clone()], r.as_ref().err());
        r
    }
}

/// Ends the producer spans of a send, marked failed if it failed.
fn finish_spans(spans: impl IntoIterator<Item = ProducerSpan>, error: Option<&DispatchError>) {
    for span in spans {
        span.finish(error.map(|e| e as &dyn std::fmt::Display));
    }
}

/// Queue names become part of key names: keep them to a safe alphabet.
pub fn valid_queue_name(q: &str) -> bool {
    /// The bytes a queue name may hold (see `envelope::byte_set`).
    const QUEUE_BYTES: [bool; 256] = crate::model::envelope::byte_set(b"-_.");
    !q.is_empty() && q.len() <= 64 && q.bytes().all(|b| QUEUE_BYTES[b as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delays and timeouts past ten years are refused, not wrapped around (a delay of
    /// 18446744073709551 s once made a task due 387 ms later) or panicked on.
    #[test]
    fn huge_delays_and_timeouts_are_refused() {
        // Preparing a dispatch never touches Redis: a lazy broker of a closed port will do.
        let broker = Broker::lazy(crate::BrokerConfig::new("redis://127.0.0.1:1")).unwrap();
        let raw = |due_ms, timeout| RawDispatch {
            task: "t",
            queue: "default",
            args: Vec::new(),
            task_id: None,
            labels: Default::default(),
            retry: None,
            timeout,
            due_ms,
            unique_key: None,
            priority: Default::default(),
        };
        let year = Duration::from_secs(366 * 86_400);
        for (due, timeout) in [
            (Some(envelope::due_in(Duration::MAX)), None),
            (
                Some(envelope::due_in(Duration::from_secs(
                    18_446_744_073_709_551,
                ))),
                None,
            ),
            (Some(envelope::due_in(11 * year)), None),
            (None, Some(Duration::MAX)),
            (None, Some(11 * year)),
        ] {
            match broker.prepare_raw(raw(due, timeout)) {
                Err(DispatchError::Invalid { what, .. }) => assert!(what.contains("10 years")),
                other => panic!("{due:?} {timeout:?}: {other:?}"),
            }
        }
        // Up to ten years is fine, and lands where it says.
        let msg = broker
            .prepare_raw(raw(Some(envelope::due_in(9 * year)), Some(9 * year)))
            .unwrap();
        assert!(msg.due_ms.unwrap() > envelope::now_ms() + envelope::duration_ms(8 * year));
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(valid_queue_name("default"));
        assert!(valid_queue_name("mail.high-prio_2"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name("a b"));
        assert!(!valid_queue_name("{x}"));
    }
}
