//! When to try again: exponential backoff with equal jitter (half of each ceiling fixed, half jittered),
//! honouring a server's Retry-After with jitter above it, giving up once the next attempt would fall
//! outside the retry window (24 h by default).
//!
//! Equal rather than full jitter: every delay is at least half its ceiling, so the number of attempts that
//! fit in the window is bounded ([`BackoffPolicy::max_attempts`]) and the queue's receive limit can be
//! derived from it; full jitter (delays down to zero) has no such bound.
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

    /// The shortest delay after `attempts` failed attempts: half the ceiling.
    pub fn floor(&self, attempts: u32) -> Duration {
        self.ceiling(attempts) / 2
    }

    /// The delay after `attempts` failed attempts (≥ 1), before the window check: half the ceiling plus
    /// `jitter` × the other half. After a server's `retry_after` (capped at `max_retry_after`), at least
    /// that wait plus `jitter` × a quarter of it above it — never earlier than the server asked, and
    /// deliverers told the same instant do not all come back at once.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling = self.ceiling(attempts);
        let half = ceiling / 2;
        let backoff = (half + (ceiling - half).mul_f64(jitter)).min(ceiling);
        match retry_after {
            Some(ra) => {
                let ra = ra.min(self.max_retry_after);
                backoff.max(ra + (ra / 4).mul_f64(jitter))
            }
            None => backoff,
        }
    }

    /// The delay before the next attempt, or `GiveUp`.
    ///
    /// * `attempts`: attempts made so far (≥ 1 after a failure).
    /// * `elapsed`: time since the alert was first received.
    /// * `retry_after`: the server's Retry-After, if it sent one (see [`BackoffPolicy::delay`]).
    /// * `jitter`: a uniform sample in `[0, 1)`; values outside are clamped.
    pub fn next_attempt(
        &self,
        attempts: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> NextAttempt {
        let delay = self.delay(attempts, retry_after, jitter);
        match elapsed.checked_add(delay) {
            Some(at) if at <= self.window => NextAttempt::After(delay),
            _ => NextAttempt::GiveUp,
        }
    }

    /// The most attempts this policy makes over its window: the first one, then one after every delay
    /// at its [`floor`](BackoffPolicy::floor) until the next would start past the window. A Retry-After
    /// or jitter only lengthens delays, so no alert is attempted more often. `u32::MAX` for a policy whose
    /// floor is zero (unbounded).
    pub fn max_attempts(&self) -> u32 {
        let mut spent = Duration::ZERO;
        let mut attempts: u32 = 1;
        loop {
            let floor = self.floor(attempts);
            if floor.is_zero() {
                return u32::MAX;
            }
            if self.ceiling(attempts) == self.cap || attempts >= 64 {
                // every later delay has this same floor
                let more = self.window.saturating_sub(spent).as_nanos() / floor.as_nanos();
                return u32::try_from(u128::from(attempts) + more).unwrap_or(u32::MAX);
            }
            if spent + floor > self.window {
                return attempts;
            }
            spent += floor;
            attempts += 1;
        }
    }
}

#[cfg(test)]
mod tests;
