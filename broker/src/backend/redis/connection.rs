//! Connections to Redis: one Redis, a primary found through Sentinel, or a Redis Cluster.
//!
//! The URL says which ([`Target::parse`]):
//! - `redis://` / `rediss://`: one Redis (or a fixed primary).
//! - `redis+sentinel://[user:pass@]s1:p1,s2:p2/<master name>[/db]`: the primary the Sentinels
//!   name, looked up again for every new connection, so a failover is followed as soon as a
//!   connection breaks or the old primary, now a replica, answers `READONLY`.
//! - `redis+cluster://[user:pass@]h1:p1,h2:p2` (`rediss+cluster://` for TLS): a Redis Cluster,
//!   through redis-rs's cluster client, which follows `MOVED`/`ASK` and failovers itself.
//!
//! Commands go over multiplexed connections, shared: on one Redis (or Sentinel's primary) a
//! few ([`SharedConns`], `BrokerConfig::pool_size`), taken in turn, each carrying any number of
//! concurrent requests; a connection that sat idle is PINGed before reuse, and one that failed
//! with an I/O error (or `READONLY`) is replaced on next use. On a cluster, every command
//! shares one cluster connection (one multiplexed socket per node). Commands whose keys live in several slots go in a [`Batch`],
//! which sends one pipeline per slot on a cluster and one pipeline in all on one Redis.
//!
//! A blocking command (XREADGROUP BLOCK) would stall everything pipelined behind it on a
//! shared socket, so each blocking reader gets connections of its own with no response timeout
//! (see `shared/notes`: the 500 ms default trap).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, RedisError, RedisFuture, Value};
use tokio::sync::Mutex;

use crate::config::{redact, BrokerConfig};
use crate::error::{BrokerError, RedisErrorKind, RedisFailure};

use super::mux::MuxConnection;
use super::resp::RespConnection;

/// A shared connection is PINGed before reuse only when it has been idle this long.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// Where Redis is, as the URL says.
#[derive(Clone)]
pub(crate) enum Target {
    /// One Redis.
    Single(Box<Client>),
    /// The primary named by a set of Sentinels (looked up for each new connection).
    Sentinel {
        sentinels: Arc<Mutex<SentinelClient>>,
        master: String,
    },
    /// A Redis Cluster, with its seed nodes' URLs.
    Cluster {
        client: Box<ClusterClient>,
        seeds: Vec<String>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// The parts of a `redis+cluster://` or `redis+sentinel://` URL.
struct MultiHost<'a> {
    tls: bool,
    userinfo: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: &'a str,
}

fn split_multi_host<'a>(url: &'a str, scheme: &str) -> Option<MultiHost<'a>> {
    let (tls, rest) = if let Some(r) = url.strip_prefix(&format!("rediss+{scheme}://")) {
        (true, r)
    } else {
        (false, url.strip_prefix(&format!("redis+{scheme}://"))?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    Some(MultiHost {
        tls,
        userinfo,
        hosts,
        path,
    })
}

impl Target {
    /// Parses and checks a Redis URL without connecting.
    pub(crate) fn parse(url: &str, config: &BrokerConfig) -> Result<Self, BrokerError> {
        ensure_tls_provider();
        let invalid = |reason: String| BrokerError::InvalidUrl {
            url: redact(url),
            reason,
        };
        if let Some(m) = split_multi_host(url, "cluster") {
            if m.hosts.is_empty() {
                return Err(invalid("no cluster node given".into()));
            }
            let scheme = if m.tls { "rediss" } else { "redis" };
            let auth = m.userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            let seeds: Vec<String> = m
                .hosts
                .iter()
                .map(|h| format!("{scheme}://{auth}{h}"))
                .collect();
            let client = cluster_builder(&seeds, config)
                .response_timeout(config.command_timeout)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            return Ok(Target::Cluster {
                client: Box::new(client),
                seeds,
            });
        }
        if let Some(m) = split_multi_host(url, "sentinel") {
            let mut path = m.path.split('/');
            let master = path.next().unwrap_or_default().to_string();
            if m.hosts.is_empty() || master.is_empty() {
                return Err(invalid(
                    "expected redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>"
                        .into(),
                ));
            }
            let db: i64 = match path.next().filter(|d| !d.is_empty()) {
                Some(d) => d
                    .parse()
                    .map_err(|_| invalid(format!("database {d:?} is not a number")))?,
                None => 0,
            };
            // Credentials are the primary's; the Sentinels are asked without.
            let scheme = if m.tls { "rediss" } else { "redis" };
            let sentinels: Vec<String> =
                m.hosts.iter().map(|h| format!("{scheme}://{h}")).collect();
            let mut info = redis::RedisConnectionInfo::default().set_db(db);
            if let Some(u) = m.userinfo {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let decode = |s: &str| {
                    percent_decode(s).ok_or_else(|| invalid("bad %-escape in credentials".into()))
                };
                if !user.is_empty() {
                    info = info.set_username(decode(user)?);
                }
                if let Some(p) = pass {
                    info = info.set_password(decode(p)?);
                }
            }
            let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
            if m.tls {
                node = node.set_tls_mode(redis::TlsMode::Secure);
            }
            let client =
                SentinelClient::build(sentinels, &master, Some(node), SentinelServerType::Master)
                    .map_err(|e| invalid(e.to_string()))?;
            return Ok(Target::Sentinel {
                sentinels: Arc::new(Mutex::new(client)),
                master,
            });
        }
        let scheme = url.split("://").next().unwrap_or_default();
        if scheme.contains('+') && !scheme.ends_with("+unix") {
            return Err(invalid(
                "expected redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://"
                    .into(),
            ));
        }
        Client::open(url)
            .map(|c| Target::Single(Box::new(c)))
            .map_err(|e| invalid(e.to_string()))
    }

    /// Host and port of one Redis reached over TLS (`rediss://`), if that is what this is.
    pub(crate) fn tls_addr(&self) -> Option<(String, u16)> {
        match self {
            Target::Single(c) => match c.get_connection_info().addr() {
                redis::ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
                _ => None,
            },
            _ => None,
        }
    }

    /// `single`, `sentinel` or `cluster`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Single(_) => "single",
            Target::Sentinel { .. } => "sentinel",
            Target::Cluster { .. } => "cluster",
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    /// A client for one server: the Redis, the primary the Sentinels name now, or (on a
    /// cluster) seed node `n` (mod the number of seeds), for non-sharded pub/sub, which Redis
    /// Cluster spreads to every node.
    pub(crate) async fn node_client(&self, n: usize) -> Result<Client, BrokerError> {
        match self {
            Target::Single(c) => Ok((**c).clone()),
            Target::Sentinel { sentinels, master } => {
                let fut: Erased<'_, Client> = Box::pin(async move {
                    let mut s = sentinels.lock().await;
                    s.async_get_client().await.map_err(|e| {
                        let message =
                            format!("the Sentinels name no reachable primary for {master:?}: {e}");
                        match e.kind() {
                            // The URL names no Sentinel: a mistake to report.
                            redis::ErrorKind::InvalidClientConfig
                            | redis::ErrorKind::EmptySentinelList => BrokerError::Topology(message),
                            // A password the primary refuses is reported as such; anything
                            // else is the primary out of reach (down until the Sentinels fail
                            // over, or they are down themselves), which workers wait out.
                            _ => {
                                let mut f = RedisFailure::from_redis(&e);
                                if !matches!(f.kind, RedisErrorKind::Auth) {
                                    f.kind = RedisErrorKind::Unreachable;
                                }
                                f.message = message;
                                BrokerError::Redis(Box::new(f))
                            }
                        }
                    })
                });
                fut.await
            }
            Target::Cluster { seeds, .. } => {
                let url = &seeds[n % seeds.len()];
                Client::open(url.as_str()).map_err(BrokerError::redis)
            }
        }
    }
}

/// `ConnectionLike` for an enum of connections: each call goes to the variant's connection.
macro_rules! connection_like_by_variant {
    ($enum:ident: $($variant:ident),+) => {
        impl ConnectionLike for $enum {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
                match self {
                    $($enum::$variant(c) => c.req_packed_command(cmd),)+
                }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                cmd: &'a redis::Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                match self {
                    $($enum::$variant(c) => c.req_packed_commands(cmd, offset, count),)+
                }
            }

            fn get_db(&self) -> i64 {
                match self {
                    $($enum::$variant(c) => c.get_db(),)+
                }
            }
        }
    };
}

/// The multiplexed connections every command to one Redis (or Sentinel's primary) shares.
///
/// A multiplexed connection carries any number of requests at once, pipelined on its socket
/// and answered in order, so sharing a few of them (taken in turn) lets every concurrent
/// dispatch of a process be in flight together; a pool that lends a connection to one request
/// at a time capped them at its size. A pool of connections (deadpool) is the well-kept answer
/// for connections used one request at a time, which these are not, so this small set is kiq's
/// own. Each slot's connection is kiq's own ([`MuxConnection`]) unless it goes over TLS, is
/// lent to batches that wait for replicas, or `native_resp` is off (then redis-rs's). It is made on first use, PINGed before reuse only
/// after sitting idle (a Redis restarted meanwhile is found out before a command fails on
/// it), and replaced after it failed (kiq's says so itself), an I/O error or `READONLY` (a
/// Sentinel failover: the next connection asks the Sentinels again).
pub(crate) struct SharedConns {
    target: Target,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// The response timeout of kiq's own connections (redis-rs's are set up with it in
    /// `config`).
    command_timeout: Duration,
    /// Whether to make kiq's own multiplexed connections ([`MuxConnection`]) where they
    /// serve (not over TLS, not in exclusive mode).
    native: bool,
    /// Lend each connection to one request at a time: for batches that end in `WAIT`, which
    /// blocks its connection until replicas acknowledge (it would stall everything pipelined
    /// behind it on a shared socket).
    exclusive: bool,
    slots: Box<[Slot]>,
    /// Exclusive mode: one permit per slot, so that callers wait in turn for whichever slot
    /// frees first.
    permits: tokio::sync::Semaphore,
    next: AtomicUsize,
    /// Connection generations, so that a failure only drops the connection it happened on.
    gens: AtomicU64,
    /// Bumped when every connection must go (`READONLY`: the primary was demoted).
    epoch: AtomicU64,
}

/// One connection's place.
struct Slot {
    live: Mutex<Option<Live>>,
    /// The generation of this slot's connection that failed for good (0: none).
    broken: AtomicU64,
}

/// A slot's connection, its generation and epoch, and when it was last handed out (ms since
/// the epoch).
struct Live {
    conn: SharedConn,
    used_ms: AtomicU64,
    gen: u64,
    epoch: u64,
}

/// A connection handed out by [`SharedConns::get`]; in exclusive mode it holds its slot (and
/// its permit, released after the slot) until dropped.
pub(crate) struct Lease<'a> {
    slot: usize,
    gen: u64,
    epoch: u64,
    conn: SharedConn,
    /// Exclusive mode: the slot, and whether its command finished. A lease dropped before
    /// (its caller gave up during `WAIT`) leaves the server still running the command, so the
    /// connection is not lent again.
    held: Option<(&'a Slot, bool)>,
    _guard: Option<tokio::sync::MutexGuard<'a, Option<Live>>>,
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some((slot, false)) = self.held {
            slot.broken.fetch_max(self.gen, Ordering::Relaxed);
        }
    }
}

impl SharedConns {
    fn new(target: Target, config: &BrokerConfig, slots: usize, exclusive: bool) -> Self {
        Self {
            target,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.command_timeout)),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            native: config.native_resp && !exclusive,
            exclusive,
            slots: (0..slots.max(1))
                .map(|_| Slot {
                    live: Mutex::new(None),
                    broken: AtomicU64::new(0),
                })
                .collect(),
            permits: tokio::sync::Semaphore::new(slots.max(1)),
            next: AtomicUsize::new(0),
            gens: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// A connection (made, or checked after idling, as needed), within `connect_timeout` in
    /// all: waiting for the slot, the idle check and connecting together.
    async fn get(&self, url: &str) -> Result<Lease<'_>, BrokerError> {
        tokio::time::timeout(self.connect_timeout, self.lease())
            .await
            .unwrap_or_else(|_| Err(no_connection_within(self.connect_timeout, url)))
    }

    async fn lease(&self) -> Result<Lease<'_>, BrokerError> {
        let n = self.slots.len();
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Exclusive: wait in turn for a permit, then take a free slot (a lease gives its slot
        // back before its permit, so there is one).
        let mut permit = None;
        let mut free = None;
        if self.exclusive {
            let p = tokio::time::timeout(self.connect_timeout, self.permits.acquire())
                .await
                .map_err(|_| {
                    BrokerError::Pool(format!(
                        "all {n} connections for batches that wait for replicas stayed busy for {} ms",
                        self.connect_timeout.as_millis()
                    ))
                })?
                .map_err(|e| BrokerError::Pool(e.to_string()))?;
            permit = Some(p);
            free = (0..n).find_map(|k| {
                let i = (turn + k) % n;
                self.slots[i].live.try_lock().ok().map(|g| (i, g))
            });
        }
        let (i, mut slot) = match free {
            Some(found) => found,
            None => (turn, self.slots[turn].live.lock().await),
        };
        let now = crate::model::envelope::now_ms();
        let epoch = self.epoch.load(Ordering::Relaxed);
        let broken = self.slots[i].broken.load(Ordering::Relaxed);
        let mut found = None;
        if let Some(live) = slot.as_ref() {
            if live.epoch == epoch && live.gen > broken && !live.conn.has_failed() {
                let idle = now.saturating_sub(live.used_ms.load(Ordering::Relaxed));
                let mut conn = live.conn.clone();
                // Marked used only once it answered: a check cut short (by the deadline) is
                // made again by the next caller.
                if idle < IDLE_BEFORE_PING.as_millis() as u64
                    || redis::cmd("PING")
                        .query_async::<()>(&mut conn)
                        .await
                        .is_ok()
                {
                    live.used_ms.store(now, Ordering::Relaxed);
                    found = Some((live.gen, conn));
                }
            }
        }
        let (gen, conn) = match found {
            Some(f) => f,
            None => {
                *slot = None;
                let conn = self.connect().await?;
                let gen = self.gens.fetch_add(1, Ordering::Relaxed) + 1;
                *slot = Some(Live {
                    conn: conn.clone(),
                    used_ms: AtomicU64::new(now),
                    gen,
                    epoch,
                });
                (gen, conn)
            }
        };
        let exclusive = self.exclusive.then_some(slot);
        Ok(Lease {
            slot: i,
            gen,
            epoch,
            conn,
            held: exclusive.is_some().then_some((&self.slots[i], false)),
            _guard: exclusive,
            _permit: permit,
        })
    }

    /// A new connection: kiq's own where it serves, else redis-rs's.
    async fn connect(&self) -> Result<SharedConn, BrokerError> {
        let client = self.target.node_client(0).await?;
        if self.native {
            if let Some(conn) = RespConnection::connect(client.get_connection_info())
                .await
                .map_err(BrokerError::redis)?
            {
                return Ok(SharedConn::Kiq(MuxConnection::start(
                    conn,
                    self.command_timeout,
                )));
            }
        }
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(BrokerError::redis)?;
        Ok(SharedConn::Redis(conn))
    }

    /// Marks `lease`'s connection as failed for good (the slot's next use makes another, and
    /// requests in flight on it keep their clones); `READONLY` marks every connection of the
    /// lease's epoch (once, however many requests saw it).
    fn discard(&self, lease: &Lease<'_>, e: &RedisError) {
        // Generations only grow: a late failure of an older connection never unmarks a newer.
        self.slots[lease.slot]
            .broken
            .fetch_max(lease.gen, Ordering::Relaxed);
        if e.code() == Some("READONLY") {
            let _ = self.epoch.compare_exchange(
                lease.epoch,
                lease.epoch + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Runs `cmd` on one of these connections.
    async fn run<T, C>(&self, cmd: &C, url: &str) -> Result<T, Result<RedisError, BrokerError>>
    where
        T: redis::FromRedisValue + Send,
        C: Queryable + ?Sized,
    {
        let mut lease = self.get(url).await.map_err(Err)?;
        let r = cmd.run(&mut lease.conn).await;
        if let Some((_, done)) = lease.held.as_mut() {
            *done = true;
        }
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_broken(&e) {
                    self.discard(&lease, &e);
                }
                Err(Ok(e))
            }
        }
    }
}

/// One of the shared connections of [`SharedConns`].
#[derive(Clone)]
pub(crate) enum SharedConn {
    /// kiq's own ([`MuxConnection`]).
    Kiq(MuxConnection),
    /// redis-rs's: over TLS, for batches that wait for replicas, or when told to.
    Redis(MultiplexedConnection),
}

impl SharedConn {
    /// Whether it failed for good (redis-rs's connections say so through their errors).
    fn has_failed(&self) -> bool {
        match self {
            SharedConn::Kiq(c) => c.has_failed(),
            SharedConn::Redis(_) => false,
        }
    }
}

connection_like_by_variant!(SharedConn: Kiq, Redis);

/// The command connections of one broker.
#[derive(Clone)]
pub(crate) enum Pool {
    /// Shared multiplexed connections to one server (and, when batches wait for replicas,
    /// connections lent to one such batch at a time).
    Pooled {
        inner: Arc<SharedConns>,
        acked: Option<Arc<SharedConns>>,
        /// kiq's own connections for workers' completions (see [`Pool::write_batch`]).
        writers: Option<Arc<Writers>>,
        target: Target,
        url: String,
        acks: ReplicaAcks,
    },
    /// One shared cluster connection, made on first use.
    Cluster {
        shared: Arc<SharedCluster>,
        target: Target,
        url: String,
        acks: ReplicaAcks,
    },
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pool::Pooled { inner, target, .. } => f
                .debug_struct("Pool")
                .field("target", target)
                .field("connections", &inner.slots.len())
                .finish(),
            Pool::Cluster { .. } => f.write_str("Pool(cluster)"),
        }
    }
}

/// Redis unreachable: no connection to `url` (when known) was had within `timeout`.
fn no_connection_within(timeout: Duration, url: &str) -> BrokerError {
    BrokerError::Redis(Box::new(RedisFailure {
        kind: RedisErrorKind::Unreachable,
        code: None,
        message: format!("no connection within {} ms", timeout.as_millis()),
        target: (!url.is_empty()).then(|| url.to_string()),
    }))
}

/// Whether a connection that failed with `e` should be thrown away.
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        // A primary demoted by a Sentinel failover: the next connection finds the new one.
        || e.code() == Some("READONLY")
}

impl Pool {
    /// Builds the connections for `config` (made lazily, on first use).
    pub fn new(target: Target, config: &BrokerConfig) -> Result<Self, BrokerError> {
        let acks = ReplicaAcks {
            wanted: config.replica_acks,
            timeout_ms: config.replica_ack_timeout.as_millis().max(1) as u64,
        };
        if let Target::Cluster { client, .. } = &target {
            return Ok(Pool::Cluster {
                shared: Arc::new(SharedCluster {
                    client: (**client).clone(),
                    conn: Mutex::new(None),
                }),
                target,
                url: config.described_url(),
                acks,
            });
        }
        let inner = Arc::new(SharedConns::new(
            target.clone(),
            config,
            config.pool_size,
            false,
        ));
        // A batch that ends in WAIT holds its connection until replicas acknowledge: such
        // batches get connections of their own, one batch each (as many as the old pool had).
        let acked = (acks.wanted > 0).then(|| {
            Arc::new(SharedConns::new(
                target.clone(),
                config,
                config.pool_size.max(8),
                true,
            ))
        });
        let writers = (config.native_resp && acks.wanted == 0).then(|| {
            Arc::new(Writers {
                idle: std::sync::Mutex::new(Vec::new()),
                unsupported: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
                connect_timeout: config.connect_timeout,
                command_timeout: config.command_timeout,
            })
        });
        Ok(Pool::Pooled {
            inner,
            acked,
            writers,
            target,
            url: config.described_url(),
            acks,
        })
    }

    /// An empty batch for these connections.
    pub(crate) fn new_batch(&self) -> Batch {
        Batch {
            cluster: matches!(self, Pool::Cluster { .. }),
            atomic: false,
            cmds: Vec::new(),
        }
    }

    /// Where the connections go.
    pub(crate) fn target(&self) -> &Target {
        match self {
            Pool::Pooled { target, .. } | Pool::Cluster { target, .. } => target,
        }
    }

    /// Turns a Redis error into the broker's, naming the cluster URL form when a plain URL
    /// reached a cluster node.
    fn error(&self, e: RedisError) -> BrokerError {
        if let Pool::Pooled { url, .. } = self {
            if matches!(
                e.code(),
                Some("MOVED" | "ASK" | "CROSSSLOT" | "CLUSTERDOWN")
            ) {
                return cluster_node_error(url);
            }
        }
        BrokerError::redis(e).at(self.url())
    }

    /// The URL the connections go to (password removed), with where it came from.
    pub(crate) fn url(&self) -> &str {
        match self {
            Pool::Pooled { url, .. } | Pool::Cluster { url, .. } => url,
        }
    }

    /// Runs `cmd` (a command, a pipeline or a script invocation). On one server, a connection
    /// that failed with an I/O error is replaced on its next use; a pipeline must keep to one
    /// slot on a cluster (see [`Batch`] for one that does not).
    pub async fn query<T, C>(&self, cmd: &C) -> Result<T, BrokerError>
    where
        T: redis::FromRedisValue + Send,
        C: Queryable + ?Sized,
    {
        match self {
            Pool::Pooled { inner, .. } => self.run_on(inner, cmd).await,
            Pool::Cluster { shared, .. } => {
                // Boxed: the cluster client's futures are deep enough to overflow the compiler's
                // layout depth in every async fn that awaits this one.
                let fut: Erased<'_, T> = Box::pin(async move {
                    let mut c = shared.get().await?;
                    let r = cmd.run(&mut c).await;
                    shared.check(r).await
                });
                fut.await.map_err(|e| e.at(self.url()))
            }
        }
    }

    /// Runs `cmd` on `conns` (one server).
    async fn run_on<T, C>(&self, conns: &SharedConns, cmd: &C) -> Result<T, BrokerError>
    where
        T: redis::FromRedisValue + Send,
        C: Queryable + ?Sized,
    {
        match conns.run(cmd, self.url()).await {
            Ok(v) => Ok(v),
            Err(Ok(e)) => Err(self.error(e)),
            Err(Err(e)) => Err(e.at(self.url())),
        }
    }

    /// Runs a Lua script invocation, with the same rules as [`Pool::query`] (EVALSHA, then
    /// the script's source once if the server does not have it).
    pub async fn invoke<T: redis::FromRedisValue + Send>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        self.query(inv).await
    }

    /// Runs a batch of commands that may touch several slots: one pipeline on one server, one
    /// pipeline per slot on a cluster (sent concurrently; each keeps the batch's order).
    /// Returns every reply, in the batch's order.
    pub async fn batch(&self, batch: Batch) -> Result<Vec<Value>, BrokerError> {
        if batch.cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Pool::Pooled {
                inner, acked, acks, ..
            } => {
                // One command is atomic already.
                let atomic = batch.atomic && batch.cmds.len() > 1;
                let mut pipe = redis::Pipeline::with_capacity(batch.cmds.len() + 3);
                if atomic {
                    pipe.cmd("MULTI");
                }
                for (_, cmd) in batch.cmds {
                    pipe.add_command(cmd);
                }
                if atomic {
                    pipe.cmd("EXEC");
                }
                // WAIT after EXEC, outside the transaction.
                acks.add_wait(&mut pipe);
                let conns = acked.as_deref().unwrap_or(inner);
                let mut replies: Vec<Value> = self.run_on(conns, &pipe).await?;
                acks.check(&mut replies)?;
                if !atomic {
                    return Ok(replies);
                }
                // OK, QUEUED for each command, then EXEC's array of their replies. (An
                // out-of-memory Redis refuses the whole transaction: EXECABORT, or OOM for
                // EXEC itself, both errors of the query above.)
                match replies.pop().map(Value::extract_error) {
                    Some(Ok(Value::Array(v))) => Ok(v),
                    Some(Err(e)) => Err(self.error(e)),
                    other => Err(BrokerError::Invalid(format!(
                        "unexpected reply to EXEC: {other:?}"
                    ))),
                }
            }
            Pool::Cluster { shared, acks, .. } => {
                let fut: Erased<'_, Vec<Value>> = Box::pin(async move {
                    let c = shared.get().await?;
                    let total = batch.cmds.len();
                    let mut by_slot: BTreeMap<u16, (Vec<usize>, redis::Pipeline)> = BTreeMap::new();
                    for (i, (slot, cmd)) in batch.cmds.into_iter().enumerate() {
                        let (idx, pipe) = by_slot.entry(slot).or_default();
                        idx.push(i);
                        pipe.add_command(cmd);
                    }
                    let runs = by_slot.into_values().map(|(idx, mut pipe)| {
                        let mut c = c.clone();
                        // WAIT goes in each slot's pipeline, to the primary that took it.
                        acks.add_wait(&mut pipe);
                        async move {
                            let r = pipe.query_async(&mut c).await;
                            let mut replies: Vec<Value> = shared.check(r).await?;
                            acks.check(&mut replies)?;
                            Ok::<_, BrokerError>((idx, replies))
                        }
                    });
                    let mut out = vec![Value::Nil; total];
                    for (idx, replies) in futures_util::future::try_join_all(runs).await? {
                        for (i, v) in idx.into_iter().zip(replies) {
                            out[i] = v;
                        }
                    }
                    Ok(out)
                });
                fut.await.map_err(|e| e.at(self.url()))
            }
        }
    }

    /// Runs a batch of a worker's completions as [`Pool::batch`] does, but on kiq's own
    /// connections ([`Writers`]) where they serve: one server or the primary the Sentinels
    /// name, not over TLS, not atomic, not waiting for replicas. The replies are the same, and
    /// so are the errors (redis-rs's `Pipeline::query_async` makes them from the replies).
    pub(crate) async fn write_batch(&self, batch: Batch) -> Result<Vec<Value>, BrokerError> {
        let (target, writers) = match self {
            Pool::Pooled {
                target,
                writers: Some(w),
                ..
            } if !batch.atomic
                && !batch.cmds.is_empty()
                && !w.unsupported.load(Ordering::Relaxed) =>
            {
                (target, w)
            }
            _ => return self.batch(batch).await,
        };
        let epoch = writers.epoch.load(Ordering::Relaxed);
        let mut conn = match writers.take() {
            Some(c) => c,
            None => match self.connect_own(target, writers.connect_timeout).await? {
                Some(c) => c,
                None => {
                    writers.unsupported.store(true, Ordering::Relaxed);
                    return self.batch(batch).await;
                }
            },
        };
        let mut pipe = redis::Pipeline::with_capacity(batch.cmds.len());
        for (_, cmd) in batch.cmds {
            pipe.add_command(cmd);
        }
        let sent = pipe.query_async::<Vec<Value>>(&mut conn);
        match tokio::time::timeout(writers.command_timeout, sent).await {
            Ok(Ok(replies)) => {
                writers.put(conn, epoch);
                Ok(replies)
            }
            Ok(Err(e)) => {
                if is_broken(&e) {
                    // The others may be as stale (`READONLY`: all go to a demoted primary).
                    writers.clear();
                } else {
                    writers.put(conn, epoch);
                }
                Err(self.error(e))
            }
            // The connection is dropped: its reply may still come.
            Err(_) => Err(self.error(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no reply within {} ms", writers.command_timeout.as_millis()),
                )
                .into(),
            )),
        }
    }

    /// A connection of kiq's own to the server, or the primary the Sentinels name now, within
    /// `timeout` in all (the lookup included); `None` over TLS.
    async fn connect_own(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<Option<RespConnection>, BrokerError> {
        let made = tokio::time::timeout(
            timeout,
            Box::pin(async {
                let client = target.node_client(0).await?;
                RespConnection::connect(client.get_connection_info())
                    .await
                    .map_err(|e| self.error(e))
            }),
        )
        .await;
        made.unwrap_or_else(|_| Err(no_connection_within(timeout, self.url())))
    }

    /// Opens a connection of its own for a blocking reader: no response timeout, since the
    /// server holds XREADGROUP BLOCK replies back on purpose. (On Sentinel, it goes to the
    /// primary named now.)
    pub async fn dedicated(&self, config: &BrokerConfig) -> Result<RedisConnection, BrokerError> {
        match self {
            Pool::Pooled { target, .. } => {
                let conn_config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(None);
                let client = target.node_client(0).await?;
                Ok(RedisConnection::Plain(
                    client
                        .get_multiplexed_async_connection_with_config(&conn_config)
                        .await
                        .map_err(|e| BrokerError::redis(e).at(self.url()))?,
                ))
            }
            Pool::Cluster { target, .. } => {
                let Target::Cluster { seeds, .. } = target else {
                    return Err(BrokerError::Config("cluster pool without a cluster".into()));
                };
                let client = cluster_builder(seeds, config)
                    .build()
                    .map_err(BrokerError::redis)?;
                let fut: Erased<'_, ClusterConnection> = Box::pin(async move {
                    client
                        .get_async_connection()
                        .await
                        .map_err(BrokerError::redis)
                });
                let conn = fut.await.map_err(|e| e.at(self.url()))?;
                Ok(RedisConnection::Cluster(conn))
            }
        }
    }
}

impl Pool {
    /// Opens a connection of its own for a stream reader: kiq's own RESP2 connection
    /// ([`RespConnection`]) to one server or the primary the Sentinels name now, unless it is
    /// reached over TLS or `config.native_resp` is off; otherwise, and on a cluster,
    /// redis-rs's, as [`Pool::dedicated`] opens it.
    pub(crate) async fn reader_connection(
        &self,
        config: &BrokerConfig,
    ) -> Result<ReaderConnection, BrokerError> {
        if let (Pool::Pooled { target, .. }, true) = (self, config.native_resp) {
            if let Some(conn) = self.connect_own(target, config.connect_timeout).await? {
                return Ok(ReaderConnection::Resp(conn));
            }
        }
        Ok(ReaderConnection::Redis(self.dedicated(config).await?))
    }
}

/// Connections of kiq's own ([`RespConnection`]) for the batches of a worker's completer,
/// one per batch in flight, kept between batches (see [`Pool::write_batch`]). Why not the
/// shared multiplexed connections: their replies are parsed by redis-rs's parser, which cost
/// a worker about 0.2 µs per task on these (two small replies per task).
pub(crate) struct Writers {
    /// Connections between batches, with when each was last used.
    idle: std::sync::Mutex<Vec<(RespConnection, Instant)>>,
    /// Set once the server turned out to be reached over TLS: batches then take the pool.
    unsupported: AtomicBool,
    /// Bumped when every connection must go (see [`Writers::clear`]): one taken or made
    /// before is not kept after its batch.
    epoch: AtomicU64,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// Most connections [`Writers`] keep between batches (the completer has two batches in
/// flight at most).
const IDLE_WRITERS: usize = 4;

impl Writers {
    /// A connection used lately. One idle longer than [`IDLE_BEFORE_PING`] is not trusted (a
    /// Redis restarted meanwhile would fail the batch): it is closed, and a new one made.
    fn take(&self) -> Option<RespConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, used)) = idle.pop() {
            if used.elapsed() < IDLE_BEFORE_PING {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` (taken or made in `epoch`) for the next batch, if it can take one and no
    /// failure since has called for every connection to go.
    fn put(&self, conn: RespConnection, epoch: u64) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_WRITERS
            && conn.is_usable()
            && self.epoch.load(Ordering::Relaxed) == epoch
        {
            idle.push((conn, Instant::now()));
        }
    }

    /// Closes every connection kept, and keeps none of those in use now once their batches
    /// end (`READONLY`: they all go to a demoted primary).
    fn clear(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::Relaxed);
        idle.clear();
    }
}

/// A stream reader's connection (see [`Pool::reader_connection`]).
pub(crate) enum ReaderConnection {
    /// kiq's own.
    Resp(RespConnection),
    /// redis-rs's.
    Redis(RedisConnection),
}

connection_like_by_variant!(ReaderConnection: Resp, Redis);

/// The cluster connection every command of a broker shares (one multiplexed socket per node),
/// made on first use and made afresh after a failure redis-rs does not recover from itself:
/// after its primary died, it keeps retrying the dead node's address instead of asking the
/// other nodes who serves its slots now, so commands time out until a new connection reads the
/// topology again.
pub(crate) struct SharedCluster {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
}

impl SharedCluster {
    async fn get(&self) -> Result<ClusterConnection, BrokerError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .client
            .get_async_connection()
            .await
            .map_err(BrokerError::redis)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Passes `r` on, dropping the connection first if it failed for good.
    async fn check<T>(&self, r: Result<T, RedisError>) -> Result<T, BrokerError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let err = BrokerError::redis(e);
                if err.is_unavailable() {
                    self.conn.lock().await.take();
                }
                Err(err)
            }
        }
    }
}

/// How redis-rs's cluster client is set up for kiq. A node that stops answering is given up
/// after a few reconnect attempts, so that the client asks the other nodes who serves its
/// slots now: by default it would reconnect to the dead node forever and never learn that
/// its replica was promoted.
pub(crate) fn cluster_builder(
    seeds: &[String],
    config: &BrokerConfig,
) -> redis::cluster::ClusterClientBuilder {
    ClusterClient::builder(seeds.to_vec())
        .connection_timeout(config.connect_timeout)
        .max_connection_attempts(std::num::NonZeroUsize::MIN.saturating_add(2))
}

/// How many replicas must acknowledge a batch (`WAIT`), and for how long to wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaAcks {
    wanted: usize,
    timeout_ms: u64,
}

impl ReplicaAcks {
    /// Appends `WAIT` to `pipe` when acknowledgements are wanted.
    fn add_wait(&self, pipe: &mut redis::Pipeline) {
        if self.wanted > 0 {
            pipe.cmd("WAIT").arg(self.wanted).arg(self.timeout_ms);
        }
    }

    /// Takes `WAIT`'s reply off `replies` and fails if too few replicas acknowledged.
    fn check(&self, replies: &mut Vec<Value>) -> Result<(), BrokerError> {
        if self.wanted == 0 {
            return Ok(());
        }
        let got = match replies.pop() {
            Some(Value::Int(n)) => n.max(0) as usize,
            _ => 0,
        };
        if got < self.wanted {
            return Err(BrokerError::NotReplicated {
                wanted: self.wanted,
                got,
            });
        }
        Ok(())
    }
}

/// A boxed, type-erased future: the cluster client's futures are deep enough to overflow the
/// compiler's layout depth in every async fn that awaits them, unless erased.
type Erased<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// Whether the server at `host:port` answers a plain-text `PING` as Redis does: asked when a
/// `rediss://` connection failed, since a plain-text Redis answers a TLS handshake with nothing
/// a TLS client understands, and the error alone ("timed out") does not say why.
pub(crate) async fn speaks_plain_text(host: &str, port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        let reply = &buf[..n];
        Some(
            reply.starts_with(b"+PONG")
                || reply.starts_with(b"-NOAUTH")
                || reply.starts_with(b"-ERR"),
        )
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

/// The error for a plain URL that reached a Redis Cluster node.
pub(crate) fn cluster_node_error(url: &str) -> BrokerError {
    BrokerError::Topology(format!(
        "{url} is a Redis Cluster node: connect with redis+cluster://host:port[,host:port...] \
         (rediss+cluster:// for TLS)"
    ))
}

/// Commands that may touch several hash slots, grouped by slot when sent to a cluster. Made by
/// [`Pool::new_batch`]: slots are computed only for a cluster. (No `Default`: a batch made
/// without its pool would send a cluster every command in one pipeline.)
pub(crate) struct Batch {
    cluster: bool,
    atomic: bool,
    cmds: Vec<(u16, redis::Cmd)>,
}

impl Batch {
    /// On one Redis (or Sentinel's primary), sends the batch as one MULTI/EXEC transaction: all
    /// of it applies or none (an out-of-memory Redis refuses it whole). On a cluster, whose
    /// batches span slots, it changes nothing.
    pub(crate) fn atomic(&mut self) -> &mut Self {
        self.atomic = true;
        self
    }

    /// How many commands it holds (the index the next one's reply will have).
    pub(crate) fn len(&self) -> usize {
        self.cmds.len()
    }

    /// Adds `cmd`, whose keys (and shard channel) are all in the slot of `route`.
    pub(crate) fn add(&mut self, route: &str, cmd: redis::Cmd) -> &mut Self {
        let slot = if self.cluster { slot(route) } else { 0 };
        self.cmds.push((slot, cmd));
        self
    }
}

/// A connection of its own to the Redis a kiq URL names: one server, the primary the
/// Sentinels name, or a cluster (its own sockets, one per node). Blocking readers get one
/// each; applications get one from [`connect_redis`] for their own commands. It implements
/// redis-rs's `ConnectionLike`, so `redis::cmd(..).query_async(&mut conn)` works on it.
pub enum RedisConnection {
    /// To one server.
    Plain(MultiplexedConnection),
    /// To a cluster.
    Cluster(ClusterConnection),
}

#[cfg(feature = "raw-redis")]
/// Connects to the Redis `url` names, in any of the forms kiq takes (`redis://`,
/// `redis+sentinel://`, `redis+cluster://`), for an application's own commands beside kiq's:
/// a task's side effects, a test's checks. On a cluster, a command's keys must keep to one
/// slot, as always.
pub async fn connect_redis(url: &str) -> Result<RedisConnection, BrokerError> {
    let config = BrokerConfig::new(url);
    Pool::new(Target::parse(url, &config)?, &config)?
        .dedicated(&config)
        .await
}

connection_like_by_variant!(RedisConnection: Plain, Cluster);

/// A command or a pipeline that [`Pool::query`] can run.
pub trait Queryable: Sync {
    /// Sends it on `conn`.
    fn run<T: redis::FromRedisValue + Send, C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send;
}

impl Queryable for redis::Cmd {
    fn run<T: redis::FromRedisValue + Send, C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send {
        self.query_async(conn)
    }
}

impl Queryable for redis::ScriptInvocation<'_> {
    fn run<T: redis::FromRedisValue + Send, C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send {
        self.invoke_async(conn)
    }
}

impl Queryable for redis::Pipeline {
    fn run<T: redis::FromRedisValue + Send, C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send {
        self.query_async(conn)
    }
}

/// Redis Cluster's key slot: CRC16 (XMODEM) of the key's hash tag, or of the whole key, mod
/// 16384. Written out here (a dozen lines) because redis-rs keeps its slot number private
/// (`cluster_routing::Slot` has no public accessor), and [`Batch`] must group by it.
pub(crate) fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = match b.iter().position(|c| *c == b'{') {
        Some(open) => match b[open + 1..].iter().position(|c| *c == b'}') {
            Some(len) if len > 0 => &b[open + 1..open + 1 + len],
            _ => b,
        },
        None => b,
    };
    let mut crc: u16 = 0;
    for byte in tagged {
        crc ^= (*byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `%XX` escapes of a URL's credentials, decoded.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Installs rustls' ring provider once, so `rediss://` works whatever else is linked in.
fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, BrokerError> {
        Target::parse(url, &BrokerConfig::new(url))
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let err = parse("http://nope").unwrap_err();
        assert!(matches!(err, BrokerError::InvalidUrl { .. }), "{err}");
        let err = parse("redis+cluster://").unwrap_err();
        assert!(err.to_string().contains("no cluster node"), "{err}");
        let err = parse("redis+sentinel://127.0.0.1:26379").unwrap_err();
        assert!(err.to_string().contains("master name"), "{err}");
        let err = parse("redis+clustr://h:1").unwrap_err();
        assert!(err.to_string().contains("redis+cluster://"), "{err}");
    }

    #[test]
    fn urls_name_their_topology() {
        assert_eq!(parse("redis://127.0.0.1:7000").unwrap().kind(), "single");
        let t = parse("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(t.kind(), "cluster");
        let Target::Cluster { seeds, .. } = t else {
            unreachable!()
        };
        assert_eq!(
            seeds,
            ["redis://u:p@127.0.0.1:7000", "redis://u:p@127.0.0.1:7001"]
        );
        let t = parse("redis+sentinel://:s%40cret@127.0.0.1:26379,127.0.0.1:26380/main/2").unwrap();
        assert_eq!(t.kind(), "sentinel");
    }

    /// No primary to be had from the Sentinels (none reachable here) is Redis being
    /// unavailable, which workers wait out; a URL naming a server that is no Sentinel is a
    /// mistake in the URL (which stops them).
    #[tokio::test]
    async fn no_primary_from_the_sentinels_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = parse(&format!("redis+sentinel://127.0.0.1:{port}/main")).unwrap();
        let e = t.node_client(0).await.expect_err("no Sentinel listens");
        assert!(e.is_unavailable(), "{e:?}");
        assert!(e.to_string().contains("no reachable primary"), "{e}");
        // A URL that names a plain Redis, not a Sentinel, is a mistake to report.
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let t = parse(&format!("redis+sentinel://127.0.0.1:{}/main", redis.port())).unwrap();
        let e = t.node_client(0).await.expect_err("not a Sentinel");
        assert!(matches!(e, BrokerError::Topology(_)), "{e:?}");
    }

    /// A password the primary refuses, found through the Sentinels, is reported as such (a
    /// worker stops on it) rather than as Redis out of reach.
    #[tokio::test]
    async fn a_refused_password_through_the_sentinels_is_an_auth_failure() {
        let set = kiq_testkit::RedisSentinels::start_with(kiq_testkit::RedisOptions {
            extra_args: ["--user", "kiq", "on", ">s3cret", "~*", "&*", "+@all"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        })
        .unwrap();
        let with = |userinfo: &str| {
            set.url().replacen(
                "redis+sentinel://",
                &format!("redis+sentinel://{userinfo}@"),
                1,
            )
        };
        let t = parse(&with("kiq:wrong")).unwrap();
        let e = t.node_client(0).await.expect_err("a wrong password");
        assert!(e.is_auth_failure(), "{e:?}");
        assert!(!e.is_unavailable(), "{e:?}");
        let t = parse(&with("kiq:s3cret")).unwrap();
        assert!(t.node_client(0).await.is_ok());
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    }

    fn pool(url: &str, native: bool) -> Pool {
        let mut config = BrokerConfig::new(url).native_resp(native);
        config.connect_timeout = Duration::from_millis(500);
        Pool::new(Target::parse(url, &config).unwrap(), &config).unwrap()
    }

    fn batch(pool: &Pool, cmds: &[&[&str]]) -> Batch {
        let mut b = pool.new_batch();
        for words in cmds {
            let mut cmd = redis::Cmd::new();
            for w in *words {
                cmd.arg(*w);
            }
            b.add(words.get(1).copied().unwrap_or_default(), cmd);
        }
        b
    }

    /// A completer's batch on kiq's own connections gives what the shared connections give:
    /// the replies, and the same error when a command fails. After Redis restarts, the batch
    /// on the old connection fails as unavailable (the completer retries it) and the next one
    /// goes through on a new connection.
    #[tokio::test]
    async fn completer_batches_on_kiqs_connections() {
        let mut redis = kiq_testkit::RedisServer::start().unwrap();
        let (ours, theirs) = (pool(&redis.url(), true), pool(&redis.url(), false));
        let Pool::Pooled { writers, .. } = &theirs else {
            unreachable!()
        };
        assert!(writers.is_none());
        let good: &[&[&str]] = &[
            &["SET", "k", "v", "PX", "60000"],
            &["PUBLISH", "k", "x"],
            &["ZADD", "z", "1", "a"],
        ];
        let bad: &[&[&str]] = &[&["SET", "n", "x"], &["INCR", "n"], &["GET", "n"]];
        for p in [&ours, &theirs] {
            redis.command("DEL z").unwrap();
            let replies = p.write_batch(batch(p, good)).await.unwrap();
            assert_eq!(
                replies,
                vec![Value::Okay, Value::Int(0), Value::Int(1)],
                "{p:?}"
            );
        }
        let a = ours.write_batch(batch(&ours, bad)).await.unwrap_err();
        let b = theirs.write_batch(batch(&theirs, bad)).await.unwrap_err();
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.redis_failure().unwrap().code.as_deref(), Some("ERR"));
        let Pool::Pooled {
            writers: Some(w), ..
        } = &ours
        else {
            unreachable!()
        };
        assert_eq!(
            w.idle.lock().unwrap().len(),
            1,
            "kept after a command error"
        );
        // A connection in use while every connection is dropped is not kept after its batch.
        let epoch = w.epoch.load(Ordering::Relaxed);
        let in_use = w.take().unwrap();
        w.clear();
        w.put(in_use, epoch);
        assert!(w.idle.lock().unwrap().is_empty());
        ours.write_batch(batch(&ours, good)).await.unwrap();
        assert_eq!(w.idle.lock().unwrap().len(), 1);

        redis.restart().unwrap();
        let e = ours.write_batch(batch(&ours, good)).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(
            w.idle.lock().unwrap().is_empty(),
            "a broken connection is not kept"
        );
        let replies = ours.write_batch(batch(&ours, good)).await.unwrap();
        assert_eq!(replies.len(), 3);
        // Two kept, then the server becomes a replica: the batch fails with READONLY, and
        // neither connection is kept (both go to a server that no longer takes writes).
        let (b1, b2) = (batch(&ours, good), batch(&ours, good));
        let (r1, r2) = tokio::join!(ours.write_batch(b1), ours.write_batch(b2));
        assert!(r1.is_ok() && r2.is_ok());
        assert_eq!(w.idle.lock().unwrap().len(), 2);
        let primary = kiq_testkit::RedisServer::start().unwrap();
        redis
            .command(&format!("REPLICAOF 127.0.0.1 {}", primary.port()))
            .unwrap();
        let e = ours.write_batch(batch(&ours, good)).await.unwrap_err();
        assert_eq!(
            e.redis_failure().unwrap().code.as_deref(),
            Some("READONLY"),
            "{e}"
        );
        assert!(w.idle.lock().unwrap().is_empty());
        // Over TLS, batches go through the shared connections.
        let tls = pool(&format!("rediss://127.0.0.1:{}", redis.port()), true);
        let _ = tls.write_batch(batch(&tls, good)).await;
        let Pool::Pooled {
            writers: Some(w), ..
        } = &tls
        else {
            unreachable!()
        };
        assert!(w.unsupported.load(Ordering::Relaxed));
    }

    /// The shared connections are kiq's own where they serve, and answer as redis-rs's do:
    /// replies and errors. A connection that failed (Redis restarted) is replaced on the next
    /// request, and so is one to a primary that was demoted (`READONLY`).
    #[tokio::test]
    async fn shared_connections_are_kiqs_own_where_they_serve() {
        let mut redis = kiq_testkit::RedisServer::start().unwrap();
        let one = |native| {
            let mut config = BrokerConfig::new(redis.url()).native_resp(native);
            config.pool_size = 1;
            Pool::new(Target::parse(&redis.url(), &config).unwrap(), &config).unwrap()
        };
        let (ours, theirs) = (one(true), one(false));
        // The generation of the connection in use.
        let gen = |p: &Pool| {
            let Pool::Pooled { inner, .. } = p else {
                unreachable!()
            };
            let live = inner.slots[0].live.try_lock().unwrap();
            live.as_ref().map(|l| l.gen)
        };
        let kind = |p: &Pool| {
            let Pool::Pooled { inner, .. } = p else {
                unreachable!()
            };
            let live = inner.slots[0].live.try_lock().unwrap();
            match live.as_ref().map(|l| &l.conn) {
                Some(SharedConn::Kiq(_)) => "kiq",
                Some(SharedConn::Redis(_)) => "redis-rs",
                None => "none",
            }
        };
        let id = |p: &Pool| {
            let p = p.clone();
            async move { p.query::<i64, _>(redis::cmd("CLIENT").arg("ID")).await }
        };
        for p in [&ours, &theirs] {
            p.query::<(), _>(redis::cmd("SET").arg("s").arg("x"))
                .await
                .unwrap();
        }
        assert_eq!((kind(&ours), kind(&theirs)), ("kiq", "redis-rs"));
        let first = gen(&ours);
        let mut errors = Vec::new();
        for p in [&ours, &theirs] {
            let v: Vec<Value> = p
                .batch(batch(p, &[&["GET", "s"], &["SET", "n", "1"]]))
                .await
                .unwrap();
            assert_eq!(v, vec![Value::BulkString(b"x".to_vec()), Value::Okay]);
            errors.push(
                p.query::<i64, _>(redis::cmd("INCR").arg("s"))
                    .await
                    .unwrap_err()
                    .to_string(),
            );
            let mut atomic = batch(p, &[&["SET", "t", "1"], &["INCR", "t"]]);
            atomic.atomic();
            let v = p.batch(atomic).await.unwrap();
            assert_eq!(v, vec![Value::Okay, Value::Int(2)]);
        }
        assert_eq!(errors[0], errors[1]);
        assert_eq!(gen(&ours), first, "error replies keep the connection");

        let before = gen(&ours);
        redis.restart().unwrap();
        // The first request may still meet the old connection, and fails as unavailable.
        if let Err(e) = id(&ours).await {
            assert!(e.is_unavailable(), "{e}");
        }
        id(&ours).await.unwrap();
        let after = gen(&ours);
        assert_ne!(before, after, "a new connection");

        let primary = kiq_testkit::RedisServer::start().unwrap();
        redis
            .command(&format!("REPLICAOF 127.0.0.1 {}", primary.port()))
            .unwrap();
        let e = ours
            .query::<(), _>(redis::cmd("SET").arg("s").arg("y"))
            .await
            .unwrap_err();
        assert_eq!(e.redis_failure().unwrap().code.as_deref(), Some("READONLY"));
        redis.command("REPLICAOF NO ONE").unwrap();
        id(&ours).await.unwrap();
        assert_ne!(gen(&ours), after, "a new connection after READONLY");

        // Over TLS, redis-rs's connections serve (this server speaks plain text: the
        // connection fails, but it was redis-rs's that tried).
        let tls = pool(&format!("rediss://127.0.0.1:{}", redis.port()), true);
        assert!(id(&tls).await.is_err());
        assert_eq!(kind(&tls), "none");
    }
}
