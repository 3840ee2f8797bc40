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
    /// Redis did not accept the message.
    #[error("could not enqueue {task}: {error}")]
    Broker {
        /// The task name.
        task: String,
        /// The underlying error.
        error: BrokerError,
    },
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
