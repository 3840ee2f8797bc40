//! Retry policies: how many times a failed task is tried again, and how long to wait.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `delay × n` before the n-th retry.
    Linear,
    /// `delay × 2^(n-1)` before the n-th retry.
    Exponential,
}

/// A task's retry policy, declared on `#[task(retries = .., backoff = ..)]` and overridable per
/// call with the kicker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retried).
    pub max_retries: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The base delay, in milliseconds.
    pub delay_ms: u64,
    /// The longest delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Randomise each delay within [delay/2, delay], so retries of many tasks spread out.
    pub jitter: bool,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        backoff: Backoff::Exponential,
        delay_ms: 1_000,
        max_delay_ms: 300_000,
        jitter: true,
    };

    /// `max_retries` retries with exponential backoff from 1 s to 5 min, jittered.
    pub const fn retries(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            ..Self::NONE
        }
    }

    /// Whether a task that has made `attempts` attempts may be tried again.
    pub fn allows_another(&self, attempts: u32) -> bool {
        attempts <= self.max_retries
    }

    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let n = retry.max(1) as u64;
        let raw = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Linear => self.delay_ms.saturating_mul(n),
            Backoff::Exponential => self
                .delay_ms
                .saturating_mul(1u64.checked_shl((n - 1).min(63) as u32).unwrap_or(u64::MAX)),
        };
        let capped = raw.min(self.max_delay_ms.max(1));
        let ms = if self.jitter && capped > 1 {
            let half = capped / 2;
            half + random_below(capped - half + 1)
        } else {
            capped
        };
        Duration::from_millis(ms)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::NONE
    }
}

fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    (uuid::Uuid::new_v4().as_u128() as u64) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            max_retries: 10,
            backoff,
            delay_ms: 100,
            max_delay_ms: 1_000,
            jitter: false,
        }
    }

    #[test]
    fn delays_grow_as_declared_and_are_capped() {
        let ms = |p: RetryPolicy, n| p.delay(n).as_millis() as u64;
        assert_eq!(ms(exact(Backoff::Fixed), 5), 100);
        assert_eq!(ms(exact(Backoff::Linear), 3), 300);
        assert_eq!(
            (1..=5)
                .map(|n| ms(exact(Backoff::Exponential), n))
                .collect::<Vec<_>>(),
            vec![100, 200, 400, 800, 1000]
        );
        assert_eq!(ms(exact(Backoff::Exponential), 200), 1000, "no overflow");
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let p = RetryPolicy {
            jitter: true,
            ..exact(Backoff::Fixed)
        };
        for _ in 0..1000 {
            let d = p.delay(1).as_millis();
            assert!((50..=100).contains(&d), "{d}");
        }
    }

    #[test]
    fn attempts_are_counted_from_one() {
        let p = RetryPolicy::retries(2);
        assert!(p.allows_another(1));
        assert!(p.allows_another(2));
        assert!(!p.allows_another(3));
        assert!(!RetryPolicy::NONE.allows_another(1));
    }
}
