//! The scheduler lease: at most one active scheduler, with a fencing token.
//!
//! The lease is a key holding `<holder> <token>` with a TTL. Taking it when free draws a new
//! token from a counter, so every reign has a larger token than the last. The holder renews it
//! every third of its TTL. Fires are checked against the exact lease value inside the fire
//! script, so a scheduler that lost its lease (paused, cut off, replaced) cannot emit anything.

use std::time::Duration;

use kiq_broker::Broker;

use crate::error::SchedulerError;
use crate::store::SchedKeys;

const ACQUIRE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local holder, token = string.match(v, '^(%S+) (%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return -1
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Who holds the lease now, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's id (`host-pid-random`).
    pub holder: String,
    /// Its fencing token.
    pub token: u64,
    /// Milliseconds left.
    pub ttl_ms: i64,
}

/// Takes or renews the lease for `holder`; returns its token, or `None` if another holds it.
pub async fn acquire(
    broker: &Broker,
    holder: &str,
    ttl: Duration,
) -> Result<Option<u64>, SchedulerError> {
    let k = SchedKeys::new(broker);
    let script = kiq_broker::redis::Script::new(ACQUIRE);
    let mut inv = script.key(k.lease());
    inv.key(k.fence()).arg(holder).arg(ttl.as_millis() as u64);
    let token: i64 = broker.pool().invoke(&inv).await?;
    Ok((token >= 0).then_some(token as u64))
}

/// Gives the lease up if `holder` still has it with `token` (on a clean shutdown).
pub async fn release(broker: &Broker, holder: &str, token: u64) -> Result<(), SchedulerError> {
    let k = SchedKeys::new(broker);
    let script = kiq_broker::redis::Script::new(RELEASE);
    let mut inv = script.key(k.lease());
    inv.arg(format!("{holder} {token}"));
    let _: i64 = broker.pool().invoke(&inv).await?;
    Ok(())
}

/// The current lease, if any.
pub async fn current(broker: &Broker) -> Result<Option<LeaseInfo>, SchedulerError> {
    let k = SchedKeys::new(broker);
    let mut pipe = kiq_broker::redis::pipe();
    pipe.cmd("GET").arg(k.lease()).cmd("PTTL").arg(k.lease());
    let (value, ttl_ms): (Option<String>, i64) = broker.pool().query(&pipe).await?;
    Ok(value.and_then(|v| {
        let (holder, token) = v.split_once(' ')?;
        Some(LeaseInfo {
            holder: holder.to_string(),
            token: token.parse().ok()?,
            ttl_ms,
        })
    }))
}
