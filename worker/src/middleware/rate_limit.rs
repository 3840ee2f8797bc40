//! A rate limit per task name, global across every worker: a token bucket in Redis.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Middleware, Next, Outcome, TaskCall};

/// How fast one task may start: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitRule {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens the bucket holds (starts full).
    pub burst: u32,
}

impl RateLimitRule {
    /// `count` starts per `period`, with a burst of `count`.
    pub fn new(count: u32, period: Duration) -> Self {
        Self {
            per_second: f64::from(count) / period.as_secs_f64().max(1e-3),
            burst: count.max(1),
        }
    }

    /// The same rate with a burst of `burst`.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }
}

/// A rule that does not parse: `<count>/<period>[:<burst>]`, e.g. `10/s`, `100/1m:20`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad rate limit {0:?}: expected <count>/<period>[:<burst>], e.g. 10/s, 100/1m:20")]
pub struct BadRule(pub String);

impl FromStr for RateLimitRule {
    type Err = BadRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRule(s.to_string());
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b.trim().parse::<u32>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let (count, period) = rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match period.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            p => humantime_like(p).ok_or_else(bad)?,
        };
        if count == 0 || period.is_zero() || burst == Some(0) {
            return Err(bad());
        }
        let rule = RateLimitRule::new(count, period);
        Ok(match burst {
            Some(b) => rule.burst(b),
            None => rule,
        })
    }
}

/// `10s`, `500ms`, `2m`, `1h`.
fn humantime_like(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// Limits how often named tasks start, across every worker sharing the Redis: a task over its
/// limit is deferred until a token is due (not failed, not counted as an attempt).
///
/// If Redis cannot be asked, the task runs (the worker cannot fetch work without Redis
/// anyway, so this only happens in a brief outage).
#[derive(Debug, Default, Clone)]
pub struct RateLimit {
    rules: HashMap<String, RateLimitRule>,
}

impl RateLimit {
    /// No limits yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits task `name` to `rule`.
    pub fn limit(mut self, name: impl Into<String>, rule: RateLimitRule) -> Self {
        self.rules.insert(name.into(), rule);
        self
    }

    /// Whether any task is limited.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Middleware for RateLimit {
    fn call<'a>(&'a self, task: &'a TaskCall<'a>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Some(rule) = self.rules.get(&task.envelope.task) else {
                return next.run(task).await;
            };
            match task
                .consumer
                .take_token(&task.envelope.task, rule.per_second, rule.burst)
                .await
            {
                Ok(None) => next.run(task).await,
                Ok(Some(wait)) => Outcome::Deferred {
                    // Spread the deferred ones out so they do not all come back at once.
                    after: wait + jitter(wait),
                    reason: format!("rate limit of {}/s", rule.per_second),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit unavailable; running the task");
                    next.run(task).await
                }
            }
        })
    }
}

/// Up to half of `wait` more, at random.
fn jitter(wait: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64 % 1000;
    wait.mul_f64(r as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let r: RateLimitRule = "10/s".parse().unwrap();
        assert_eq!((r.per_second, r.burst), (10.0, 10));
        let r: RateLimitRule = "120/1m:5".parse().unwrap();
        assert_eq!((r.per_second, r.burst), (2.0, 5));
        let r: RateLimitRule = "1/500ms".parse().unwrap();
        assert_eq!(r.per_second, 2.0);
        for bad in ["", "10", "x/s", "0/s", "10/s:0", "10/fortnight", "10/s:x"] {
            assert!(bad.parse::<RateLimitRule>().is_err(), "{bad:?}");
        }
    }
}
