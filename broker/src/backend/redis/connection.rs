//! Connections to Redis: a pool for commands, dedicated connections for blocking reads.
//!
//! Commands go over a deadpool pool of multiplexed connections. deadpool-redis's own manager
//! PINGs on every checkout, which costs a round trip per dispatch, so kiq's [`RedisManager`]
//! only PINGs a connection that sat idle, and [`Pool::run`] drops a connection after an I/O
//! error so the next checkout makes a fresh one. A blocking command (XREADGROUP BLOCK) would
//! stall everything pipelined behind it on a shared socket, so each blocking reader gets its
//! own connection with no response timeout (see `shared/notes`: the 500 ms default trap).

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// A pooled connection is PINGed before reuse only when it has been idle this long.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// Creates and recycles pooled connections.
pub struct RedisManager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl managed::Manager for RedisManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < IDLE_BEFORE_PING {
            return Ok(());
        }
        redis::cmd("PING")
            .query_async::<()>(conn)
            .await
            .map_err(RecycleError::Backend)
    }
}

/// The command pool.
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<RedisManager>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.inner.status())
            .finish()
    }
}

/// A connection checked out of the pool.
pub type PooledConnection = managed::Object<RedisManager>;

impl Pool {
    /// Builds a pool for `config` (connections are made lazily).
    pub fn new(client: Client, config: &BrokerConfig) -> Result<Self, BrokerError> {
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let manager = RedisManager {
            client,
            config: conn_config,
        };
        let inner = managed::Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| BrokerError::Config(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Checks out a connection.
    pub async fn get(&self) -> Result<PooledConnection, BrokerError> {
        self.inner.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => BrokerError::Redis(e),
            other => BrokerError::Pool(other.to_string()),
        })
    }

    /// Runs `cmd` (a command or a pipeline) on a pooled connection. A connection that failed
    /// with an I/O error is dropped rather than returned to the pool.
    pub async fn query<T, C>(&self, cmd: &C) -> Result<T, BrokerError>
    where
        T: redis::FromRedisValue,
        C: Queryable + ?Sized,
    {
        let mut conn = self.get().await?;
        match cmd.run(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    let _ = managed::Object::take(conn);
                }
                Err(BrokerError::Redis(e))
            }
        }
    }
}

impl Pool {
    /// Runs a Lua script invocation on a pooled connection, with the same rule as
    /// [`Pool::query`]: a connection that failed with an I/O error is dropped.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let mut conn = self.get().await?;
        match inv.invoke_async(&mut *conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    let _ = managed::Object::take(conn);
                }
                Err(BrokerError::Redis(e))
            }
        }
    }
}

/// A command or a pipeline that [`Pool::query`] can run.
pub trait Queryable: Sync {
    /// Sends it on `conn`.
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send;
}

impl Queryable for redis::Cmd {
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send {
        self.query_async(conn)
    }
}

impl Queryable for redis::Pipeline {
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send {
        self.query_async(conn)
    }
}

/// Opens a connection of its own for a blocking reader: no response timeout, since the server
/// holds XREADGROUP BLOCK replies back on purpose.
pub async fn dedicated_connection(
    client: &Client,
    config: &BrokerConfig,
) -> Result<MultiplexedConnection, BrokerError> {
    let conn_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&conn_config)
        .await?)
}

/// Parses and checks a Redis URL without connecting.
pub fn open_client(url: &str) -> Result<Client, BrokerError> {
    ensure_tls_provider();
    Client::open(url).map_err(|e| BrokerError::InvalidUrl {
        url: crate::config::redact(url),
        reason: e.to_string(),
    })
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

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let err = open_client("http://nope").unwrap_err();
        assert!(matches!(err, BrokerError::InvalidUrl { .. }), "{err}");
    }
}
