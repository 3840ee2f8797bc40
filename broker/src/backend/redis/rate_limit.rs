//! A token bucket in Redis, shared by every worker: the store behind the worker's rate-limit
//! middleware.

use std::time::Duration;

use crate::error::BrokerError;

use super::scripts::{self, TAKE_TOKEN};
use super::RedisBackend;

impl RedisBackend {
    /// Takes a token from rate-limit bucket `name`, which refills `per_second` tokens a second
    /// and holds at most `burst`. `None`: taken, go ahead; `Some(d)`: empty, the next token is
    /// due in `d`. The bucket is shared by everyone using this Redis and prefix.
    pub(crate) async fn take_token(
        &self,
        name: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, BrokerError> {
        let mut inv = TAKE_TOKEN.with_keys(&scripts::take_token_keys(&self.keys, name));
        inv.arg(per_second / 1000.0).arg(burst.max(1));
        let wait: u64 = self.pool().invoke(&inv).await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}
