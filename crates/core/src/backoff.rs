//! When to try again: exponential backoff with full jitter, honouring a server's Retry-After, giving up
//! once the next attempt would fall outside the retry window (24 h by default).
//!
//! Pure: the caller passes the attempt count, the time elapsed since the alert was first received, and a
//! jitter sample in `[0, 1)`; nothing here reads a clock or a random source.

use std::time::Duration;

/// The retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay scale of the first retry (the first retry waits up to `base`, the n-th up to `base × 2^(n-1)`).
    pub base: Duration,
    /// No computed delay exceeds this.
    pub cap: Duration,
    /// Give up when the next attempt would start later than this after the first receipt.
    pub window: Duration,
    /// A server's Retry-After is honoured up to this (SQS cannot delay a message longer than 12 h).
    pub max_retry_after: Duration,
}

/// The first retry waits up to this; each later one up to twice the one before.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(2);
/// No computed retry delay exceeds this.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(15 * 60);
/// An alert is retried for this long after its first receipt, then dead-lettered.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The longest server Retry-After honoured: SQS cannot delay a message longer than 12 hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: DEFAULT_RETRY_BASE,
            cap: DEFAULT_RETRY_CAP,
            window: DEFAULT_RETRY_WINDOW,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Try again after this delay.
    After(Duration),
    /// The window is exhausted: dead-letter and notify.
    GiveUp,
}

impl BackoffPolicy {
    /// The upper bound of the jittered delay after `attempts` failed attempts (1 = the first failure).
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(40);
        let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
        let millis = (self.base.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(millis).min(self.cap)
    }

    /// The delay before the next attempt, or `GiveUp`.
    ///
    /// * `attempts`: attempts made so far (≥ 1 after a failure).
    /// * `elapsed`: time since the alert was first received.
    /// * `retry_after`: the server's Retry-After, if it sent one: the delay is at least that (capped at
    ///   `max_retry_after`).
    /// * `jitter`: a uniform sample in `[0, 1)`; values outside are clamped.
    pub fn next_attempt(
        &self,
        attempts: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> NextAttempt {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling = self.ceiling(attempts);
        let mut delay = ceiling.mul_f64(jitter).min(ceiling);
        if let Some(ra) = retry_after {
            delay = delay.max(ra.min(self.max_retry_after));
        }
        match elapsed.checked_add(delay) {
            Some(at) if at <= self.window => NextAttempt::After(delay),
            _ => NextAttempt::GiveUp,
        }
    }
}

#[cfg(test)]
mod tests;
