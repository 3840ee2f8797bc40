//! A token bucket in Redis, shared by every worker: the store behind the worker's rate-limit
//! middleware.

use std::time::Duration;

use crate::broker::Broker;
use crate::error::BrokerError;

/// Takes one token from the bucket at `KEYS[1]` (a hash: tokens, ts), refilled at `ARGV[1]`
/// tokens per millisecond up to `ARGV[2]`. Returns 0 when a token was taken, else how many
/// milliseconds until one will be there. Time comes from the Redis server, so workers'
/// clocks do not matter.
const TAKE_TOKEN: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
"#;

impl Broker {
    /// Takes a token from rate-limit bucket `name`, which refills `per_second` tokens a second
    /// and holds at most `burst`. `None`: taken, go ahead; `Some(d)`: empty, the next token is
    /// due in `d`. The bucket is shared by everyone using this Redis and prefix.
    pub async fn take_token(
        &self,
        name: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, BrokerError> {
        if !(per_second > 0.0 && per_second.is_finite()) {
            return Err(BrokerError::Config(format!(
                "rate {per_second} per second must be positive"
            )));
        }
        if self.is_in_memory() {
            // Unit tests run tasks unthrottled.
            return Ok(None);
        }
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(TAKE_TOKEN));
        let mut inv = SCRIPT.key(self.keys().rate_limit(name));
        inv.arg(per_second / 1000.0).arg(burst.max(1));
        let wait: u64 = self.pool().invoke(&inv).await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}
