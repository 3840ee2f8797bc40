//! The broker's error types.

use crate::codec::CodecError;
use crate::record::TaskFailure;

/// A failure to talk to Redis or to set the broker up.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (password removed).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The broker configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Redis could not be reached, refused the command, or the connection broke.
    #[error("Redis error: {0}")]
    Redis(redis::RedisError),
    /// No pooled connection could be had.
    #[error("Redis is unavailable: {0}")]
    Pool(String),
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The backend cannot do this (the in-memory backend has no consumer groups, leases or
    /// dead-letter streams).
    #[error("{0} needs Redis: the in-memory broker does not support it")]
    Unsupported(&'static str),
    /// The Redis URL names the wrong kind of deployment (a plain `redis://` URL pointing at a
    /// Redis Cluster node, say): the message names the URL form to use.
    #[error("{0}")]
    Topology(String),
    /// An argument of an operator's call is unusable (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// Fewer replicas than [`BrokerConfig::replica_acks`](crate::BrokerConfig) acknowledged a
    /// batch of writes in time: it may not survive a failover, so it does not count as done.
    #[error("only {got} of {wanted} replicas acknowledged the write in time")]
    NotReplicated {
        /// Replicas asked for.
        wanted: usize,
        /// Replicas that acknowledged.
        got: usize,
    },
}

// By hand rather than `#[from]`: the message already includes the cause, so it is not also
// exposed as `source()` (a `{:#}` chain would print it twice).
impl From<redis::RedisError> for BrokerError {
    fn from(e: redis::RedisError) -> Self {
        BrokerError::Redis(e)
    }
}

impl BrokerError {
    /// Whether Redis refused the credentials (a wrong password or user): a mistake to report,
    /// not an outage to wait out.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            BrokerError::Redis(e) => {
                e.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
            }
            _ => false,
        }
    }

    /// Whether Redis refused a write because it reached `maxmemory` (an `OOM` reply).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, BrokerError::Redis(e) if e.code() == Some("OOM"))
    }

    /// Whether the error means Redis could not be reached (as opposed to a refused command or bad data).
    pub fn is_unavailable(&self) -> bool {
        match self {
            BrokerError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    // A cluster with no reachable node for the slot, or in failover.
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::ClusterConnectionNotFound
                            | redis::ErrorKind::Server(
                                redis::ServerErrorKind::ClusterDown
                                    | redis::ServerErrorKind::MasterDown
                                    | redis::ServerErrorKind::TryAgain
                            )
                    )
            }
            BrokerError::Pool(_) | BrokerError::NotReplicated { .. } => true,
            _ => false,
        }
    }
}

/// Why `.kiq()` refused a task. When it returns this, nothing was enqueued.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments of {task}: {error}")]
    Encode {
        /// The task name.
        task: String,
        /// The codec's complaint.
        error: CodecError,
    },
    /// The encoded message is larger than `max_payload_bytes`.
    #[error("message for {task} is {size} bytes, over the {limit}-byte limit")]
    PayloadTooLarge {
        /// The task name.
        task: String,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A caller-supplied task id or queue name is not usable.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// What was invalid (`task id`, `queue name`).
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// A dispatch layer refused the message.
    #[error("dispatch of {task} refused: {reason}")]
    Refused {
        /// The task name.
        task: String,
        /// The layer's reason.
        reason: String,
    },
    /// Redis did not accept the message, or did not answer: see
    /// [`DispatchError::maybe_enqueued`].
    #[error("{}", broker_message(task, id.as_deref(), error))]
    Broker {
        /// The task name.
        task: String,
        /// The id of the task whose write failed, when one message was being sent (for a
        /// batch, its first message's).
        id: Option<String>,
        /// The underlying error.
        error: BrokerError,
    },
}

impl DispatchError {
    /// Whether the task may have been enqueued after all: the connection broke or timed out
    /// after the write was sent, so Redis may have applied it without the reply arriving.
    /// Check with [`Broker::record`](crate::Broker::record) of [`DispatchError::task_id`]
    /// before sending it again (or send it again with the same task id and a unique key).
    /// Every other error means nothing was enqueued (for a `kiq_many` batch: nothing from the
    /// failed chunk on).
    pub fn maybe_enqueued(&self) -> bool {
        matches!(self, DispatchError::Broker { error, .. } if error.is_unavailable())
    }

    /// The id of the task the error is about, when known.
    pub fn task_id(&self) -> Option<&str> {
        match self {
            DispatchError::Broker { id, .. } => id.as_deref(),
            _ => None,
        }
    }
}

fn broker_message(task: &str, id: Option<&str>, error: &BrokerError) -> String {
    let which = id.map(|id| format!(" (task {id})")).unwrap_or_default();
    if error.is_unavailable() {
        format!(
            "could not confirm the enqueue of {task}{which}: {error}; it may have been enqueued \
             before the connection broke (check its record before sending it again)"
        )
    } else {
        format!("could not enqueue {task}{which}: {error}")
    }
}

/// Why `wait_result` returned without the task's output.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The task ran and failed; this is its error.
    #[error("task failed: {0}")]
    Failed(TaskFailure),
    /// The task did not finish within the wait's timeout. It may still finish later.
    #[error("timed out waiting for the result")]
    Timeout,
    /// No record of the task exists: the id is unknown or its result has expired.
    #[error("task {0} is unknown or its result has expired")]
    NotFound(String),
    /// The result exists but does not decode as the expected output type.
    #[error("cannot decode the task's result: {0}")]
    Decode(CodecError),
    /// Redis could not be reached.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Err` from dispatch says which of two things happened: refused (not enqueued), or
    /// unconfirmed (the connection broke after the write was sent: it may have been), naming
    /// the task id to check. It once said neither, and carried no id.
    #[test]
    fn dispatch_errors_say_whether_the_task_may_have_been_enqueued() {
        let broken: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe").into();
        let e = DispatchError::Broker {
            task: "app::send".into(),
            id: Some("t-17".into()),
            error: BrokerError::Redis(broken),
        };
        assert!(e.maybe_enqueued());
        assert_eq!(e.task_id(), Some("t-17"));
        let text = e.to_string();
        assert!(
            text.contains("t-17") && text.contains("may have been enqueued"),
            "{text}"
        );

        let refused = DispatchError::Broker {
            task: "app::send".into(),
            id: Some("t-18".into()),
            error: BrokerError::Config("refused".into()),
        };
        assert!(!refused.maybe_enqueued());
        assert!(refused
            .to_string()
            .starts_with("could not enqueue app::send (task t-18)"));
        let invalid = DispatchError::Invalid {
            what: "queue name",
            value: "x y".into(),
        };
        assert!(!invalid.maybe_enqueued() && invalid.task_id().is_none());
    }
}
