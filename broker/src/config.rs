//! Broker configuration.

use std::time::Duration;

use crate::codec::{KiqWire, WireFormat};

/// The Redis URL used when none is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// How a [`Broker`](crate::Broker) connects and what it keeps.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub redis_url: String,
    /// Prefix of every key (default `kiq`).
    pub prefix: String,
    /// How long a finished task's result is kept (default one day). Never unbounded.
    pub result_ttl: Duration,
    /// How long a pending task's record is kept while it waits in its queue (default 7 days).
    pub pending_ttl: Duration,
    /// Largest encoded message `.kiq()` accepts (default 8 MiB).
    pub max_payload_bytes: usize,
    /// Multiplexed command connections shared by all of this broker's commands, taken in
    /// turn (default 2): each carries any number of concurrent requests, so this does not cap
    /// how many are in flight. Blocking readers get connections of their own, and so do
    /// batches that wait for replicas (`replica_acks`: one batch per connection, at most
    /// `max(pool_size, 8)` at once).
    pub pool_size: usize,
    /// How long one command or pipeline may take before it fails (default 10 s).
    pub command_timeout: Duration,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
    /// Write a `pending` record for each task at dispatch (default true). It lets
    /// `wait_result` tell an unknown or expired task from a queued one at once, and shows the
    /// task's state before it runs. Off, dispatch is one XADD per task (about 3× less Redis CPU
    /// per task, see docs/performance.md), and a wait on a task with no record yet runs to its
    /// timeout (`WaitError::Timeout`) instead of returning `NotFound`.
    pub track_pending: bool,
    /// Replicas that must acknowledge a batch of writes (a dispatch, a worker's completions
    /// and acks) before it counts as done, with Redis's `WAIT` (default 0: asynchronous
    /// replication, as Redis does by default). With Sentinel or a cluster with replicas, 1
    /// closes the window in which a failover loses writes the old primary had accepted, at
    /// the cost of a replication round trip per batch (see docs/guarantees.md).
    pub replica_acks: usize,
    /// How long a batch waits for its replica acknowledgements before it fails (default 1 s).
    pub replica_ack_timeout: Duration,
    /// Layers every dispatch passes through, in order (see [`crate::DispatchLayer`]).
    pub dispatch_layers: Vec<std::sync::Arc<dyn crate::DispatchLayer>>,
    /// The wire format of envelopes and records, which also names the codec of task
    /// arguments and outputs (default: kiq's own, [`KiqWire`]).
    pub wire: std::sync::Arc<dyn WireFormat>,
    /// Where `redis_url` came from (`KIQ_REDIS_URL`, `--redis-url`, ...), named with the URL in
    /// connection errors so that a wrong URL is easy to trace. `from_env` sets it.
    pub redis_url_origin: Option<String>,
    /// Use kiq's own RESP2 connections (default true): the shared command connections
    /// (dispatch and every other command but pub/sub, multiplexed), and workers' stream reads
    /// and completion batches. They cost less CPU per request than redis-rs's (see
    /// docs/performance.md). Over TLS, on a cluster, and for batches that wait for replicas
    /// (`replica_acks`), redis-rs's connections serve either way; false makes them serve
    /// everything.
    pub native_resp: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            redis_url: DEFAULT_REDIS_URL.to_string(),
            prefix: "kiq".to_string(),
            result_ttl: Duration::from_secs(24 * 3600),
            pending_ttl: Duration::from_secs(7 * 24 * 3600),
            max_payload_bytes: 8 * 1024 * 1024,
            pool_size: 2,
            command_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            track_pending: true,
            replica_acks: 0,
            replica_ack_timeout: Duration::from_secs(1),
            dispatch_layers: Vec::new(),
            wire: std::sync::Arc::new(KiqWire),
            redis_url_origin: None,
            native_resp: true,
        }
    }
}

impl BrokerConfig {
    /// The defaults, with `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            ..Self::default()
        }
    }

    /// The defaults, overridden by `KIQ_REDIS_URL` and `KIQ_PREFIX` when set. (Not
    /// `KIQ_SIGNING_KEYS`, whose errors must not pass silently: parse it with
    /// [`crate::codec::SigningKeys::parse`] and pass it to [`BrokerConfig::signing_keys`].)
    pub fn from_env() -> Self {
        let mut c = Self::default();
        if let Ok(url) = std::env::var("KIQ_REDIS_URL") {
            if !url.is_empty() {
                c.redis_url = url;
                c.redis_url_origin = Some("KIQ_REDIS_URL".into());
            }
        }
        if let Ok(prefix) = std::env::var("KIQ_PREFIX") {
            if !prefix.is_empty() {
                c.prefix = prefix;
            }
        }
        c
    }

    /// Whether kiq's own RESP2 connections serve where they can (see
    /// [`BrokerConfig::native_resp`]).
    pub fn native_resp(mut self, on: bool) -> Self {
        self.native_resp = on;
        self
    }

    /// Signs every message sent with the first of `keys` and refuses to decode one that none of
    /// them signed (see [`crate::codec::SigningKeys`]): wraps the wire format in
    /// [`crate::codec::Signed`].
    pub fn signing_keys(mut self, keys: crate::codec::SigningKeys) -> Self {
        self.wire = std::sync::Arc::new(crate::codec::Signed::new(self.wire.clone(), keys));
        self
    }

    /// Names where the Redis URL came from, for connection errors (see
    /// [`BrokerConfig::redis_url_origin`]).
    pub fn redis_url_origin(mut self, origin: impl Into<String>) -> Self {
        self.redis_url_origin = Some(origin.into());
        self
    }

    /// The Redis URL without its password, followed by where it came from when known:
    /// `redis://127.0.0.1:6390 (from KIQ_REDIS_URL)`.
    pub fn described_url(&self) -> String {
        let url = redact(&self.redis_url);
        match &self.redis_url_origin {
            Some(o) => format!("{url} (from {o})"),
            None => url,
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets how long results are kept.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// Sets the largest message `.kiq()` accepts.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Turns pending records at dispatch on or off (see [`BrokerConfig::track_pending`]).
    pub fn track_pending(mut self, on: bool) -> Self {
        self.track_pending = on;
        self
    }

    /// Adds a layer every dispatch passes through (after those added before it).
    pub fn dispatch_layer(mut self, layer: impl crate::DispatchLayer) -> Self {
        self.dispatch_layers.push(std::sync::Arc::new(layer));
        self
    }

    /// Sets how many replicas must acknowledge each batch of writes (the field of the
    /// same name says what it costs and buys).
    pub fn replica_acks(mut self, replicas: usize) -> Self {
        self.replica_acks = replicas;
        self
    }

    /// Sets how many shared command connections there are (see [`BrokerConfig::pool_size`]).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }
}

/// This machine's host name (`host` when it cannot be read): part of consumer names, worker
/// heartbeats and scheduler holder ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
