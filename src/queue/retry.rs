//! Retry policy: how many attempts a run gets and how long it backs off between them.

use std::time::Duration;

/// Exponential doubles the delay after each failed attempt; fixed keeps it constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Exponential,
    Fixed,
}

/// A job's `retry:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries including the first (1 = no retry).
    pub attempts: u32,
    pub backoff: Backoff,
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Cap on any single delay.
    pub max: Duration,
    /// Full jitter: the delay is drawn uniformly from `[0, computed delay]`, so that many runs
    /// failing together do not retry in lockstep.
    pub jitter: bool,
}

/// The policy when a job has no `retry:` section: a single attempt.
pub const DEFAULT_RETRY_POLICY: RetryPolicy = RetryPolicy {
    attempts: 1,
    backoff: Backoff::Exponential,
    initial: Duration::from_secs(10),
    max: Duration::from_secs(3600),
    jitter: true,
};

impl Default for RetryPolicy {
    fn default() -> Self {
        DEFAULT_RETRY_POLICY
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempt + 1`, after attempt `failed_attempt` (1-based)
    /// failed. `unit` is a uniform random number in `[0, 1)`, used only with jitter; passing it in
    /// keeps this a pure function.
    pub fn delay(&self, failed_attempt: u32, unit: f64) -> Duration {
        let base = match self.backoff {
            Backoff::Fixed => self.initial,
            Backoff::Exponential => {
                let exp = failed_attempt.saturating_sub(1).min(63);
                let factor = 1u128 << exp;
                let ms = self.initial.as_millis().saturating_mul(factor);
                Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
            }
        };
        let capped = base.min(self.max);
        if self.jitter {
            let unit = unit.clamp(0.0, 1.0);
            Duration::from_millis((capped.as_millis() as f64 * unit).round() as u64)
        } else {
            capped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: bool) -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff,
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let p = policy(Backoff::Exponential, false);
        let delays: Vec<u64> = (1..=5).map(|a| p.delay(a, 0.5).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 60, 60]);
    }

    #[test]
    fn fixed_stays_put() {
        let p = policy(Backoff::Fixed, false);
        assert!((1..=5).all(|a| p.delay(a, 0.9) == Duration::from_secs(10)));
    }

    #[test]
    fn full_jitter_scales_the_capped_delay() {
        let p = policy(Backoff::Exponential, true);
        assert_eq!(p.delay(2, 0.0), Duration::ZERO);
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(10));
        assert_eq!(p.delay(9, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = policy(Backoff::Exponential, false);
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(60));
    }

    proptest::proptest! {
        #[test]
        fn delay_never_exceeds_max(attempt in 1u32..200, unit in 0.0f64..1.0, jitter: bool) {
            let p = policy(Backoff::Exponential, jitter);
            proptest::prop_assert!(p.delay(attempt, unit) <= p.max);
        }
    }
}
