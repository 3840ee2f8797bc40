//! The broker's error types.

use crate::codec::CodecError;
use crate::record::TaskFailure;

/// A failure to talk to Redis or to set the broker up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("{0}")]
    Redis(Box<RedisFailure>),
    /// No connection to Redis could be made (or checked) in time.
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

/// What kind of Redis failure a [`RedisFailure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisErrorKind {
    /// Redis could not be reached, or the connection broke or timed out.
    Unreachable,
    /// Redis answers but cannot serve now: a cluster with no node for the slot or in
    /// failover (`CLUSTERDOWN`, `TRYAGAIN`), a replica cut off from its primary (`MASTERDOWN`).
    NotServing,
    /// Redis refused the credentials (a wrong password or user, or none given).
    Auth,
    /// Redis refused a write because it reached `maxmemory` (`OOM`).
    OutOfMemory,
    /// The server is a read-only replica (`READONLY`): a failover demoted it.
    ReadOnly,
    /// Redis refused the command (any other error reply; [`RedisFailure::code`] names it).
    Refused,
    /// A reply could not be read as the type expected.
    BadReply,
    /// Anything else: a client-side or configuration problem (TLS, a Sentinel that knows no
    /// such primary, ...).
    Other,
}

/// A failure to talk to Redis, in kiq's own terms: redis-rs's error type stays out of kiq's
/// public API, so kiq's semver does not follow redis-rs's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisFailure {
    /// What kind of failure it is.
    pub kind: RedisErrorKind,
    /// The error code of Redis's reply (`OOM`, `WRONGPASS`, `NOSCRIPT`, ...), when Redis replied.
    pub code: Option<String>,
    /// What happened, as the client library reported it.
    pub message: String,
    /// The Redis the command went to (password removed) and where its URL came from, when
    /// known: `redis://127.0.0.1:6390 (from KIQ_REDIS_URL)`.
    pub target: Option<String>,
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.target, self.kind) {
            (Some(t), RedisErrorKind::Unreachable) => {
                write!(f, "cannot reach Redis at {t}: {}", self.message)
            }
            (Some(t), _) => write!(f, "Redis at {t}: {}", self.message),
            (None, RedisErrorKind::Unreachable) => {
                write!(f, "cannot reach Redis: {}", self.message)
            }
            (None, _) => write!(f, "Redis error: {}", self.message),
        }
    }
}

impl RedisFailure {
    /// Classifies redis-rs's error.
    pub(crate) fn from_redis(e: &redis::RedisError) -> Self {
        let code = server_code(e);
        let kind = if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            RedisErrorKind::Unreachable
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(code.as_deref(), Some("WRONGPASS" | "NOAUTH"))
        {
            RedisErrorKind::Auth
        } else if matches!(
            e.kind(),
            redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::Server(
                    redis::ServerErrorKind::ClusterDown
                        | redis::ServerErrorKind::MasterDown
                        | redis::ServerErrorKind::TryAgain
                )
        ) {
            RedisErrorKind::NotServing
        } else if code.as_deref() == Some("OOM") {
            RedisErrorKind::OutOfMemory
        } else if code.as_deref() == Some("READONLY") {
            RedisErrorKind::ReadOnly
        } else if matches!(
            e.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            RedisErrorKind::BadReply
        } else if code.is_some() {
            RedisErrorKind::Refused
        } else {
            RedisErrorKind::Other
        };
        RedisFailure {
            kind,
            code,
            message: e.to_string(),
            target: None,
        }
    }

    /// The same failure, naming the Redis it came from.
    pub(crate) fn at(mut self, target: &str) -> Self {
        if self.target.is_none() && !target.is_empty() {
            self.target = Some(target.to_string());
        }
        self
    }
}

/// The error code Redis replied with. For a pipeline or a transaction, the first failing
/// command's, passing over `EXECABORT` (which only says an earlier command was refused: an
/// out-of-memory Redis refuses a transaction's first write with `OOM`, then EXEC with it).
fn server_code(e: &redis::RedisError) -> Option<String> {
    // EXEC refused as a whole says why in its detail ("... because of: OOM ...").
    let execabort_oom = || e.to_string().contains("OOM");
    if let Some(c) = e.code() {
        if c == "EXECABORT" && execabort_oom() {
            return Some("OOM".into());
        }
        return Some(c.to_string());
    }
    let errors = e.clone().into_server_errors()?;
    let codes: Vec<&str> = errors.iter().map(|(_, s)| s.code()).collect();
    codes
        .iter()
        .find(|c| **c != "EXECABORT")
        .or(codes.first())
        .map(|c| c.to_string())
}

impl BrokerError {
    /// redis-rs's error as kiq's (crate-internal: no `From` impl, which would put redis-rs's
    /// type in kiq's public API).
    pub(crate) fn redis(e: redis::RedisError) -> Self {
        BrokerError::Redis(Box::new(RedisFailure::from_redis(&e)))
    }

    /// The same error, naming the Redis it came from when it is a Redis failure.
    pub(crate) fn at(self, target: &str) -> Self {
        match self {
            BrokerError::Redis(f) => BrokerError::Redis(Box::new((*f).at(target))),
            other => other,
        }
    }

    /// The Redis failure, when this is one.
    pub fn redis_failure(&self) -> Option<&RedisFailure> {
        match self {
            BrokerError::Redis(f) => Some(&**f),
            _ => None,
        }
    }

    /// Whether Redis refused the credentials (a wrong password or user): a mistake to report,
    /// not an outage to wait out.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, BrokerError::Redis(f) if f.kind == RedisErrorKind::Auth)
    }

    /// Whether Redis refused a write because it reached `maxmemory` (an `OOM` reply).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, BrokerError::Redis(f) if f.kind == RedisErrorKind::OutOfMemory)
    }

    /// Whether the error means Redis could not be reached (as opposed to a refused command or bad data).
    pub fn is_unavailable(&self) -> bool {
        match self {
            BrokerError::Redis(f) => matches!(
                f.kind,
                RedisErrorKind::Unreachable | RedisErrorKind::NotServing
            ),
            BrokerError::Pool(_) | BrokerError::NotReplicated { .. } => true,
            _ => false,
        }
    }
}

/// Why `.kiq()` refused a task. When it returns this, nothing was enqueued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The message is over one of kiq's limits (labels, chain steps, group members: see
    /// [`crate::envelope::MAX_LABELS`] and its neighbours).
    #[error("cannot send {task}: {reason}")]
    OverLimit {
        /// The task name.
        task: String,
        /// Which limit, and by how much.
        reason: String,
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
#[non_exhaustive]
pub enum WaitError {
    /// The task ran and failed; this is its error.
    #[error("task failed: {0}")]
    Failed(TaskFailure),
    /// The task did not finish within the wait's timeout. It may still finish later.
    #[error("timed out waiting for the result{}", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    Timeout {
        /// Why it may never finish, when kiq can tell: the task waits in a queue that no live
        /// worker reads, say.
        hint: Option<String>,
    },
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
            error: BrokerError::redis(broken),
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
