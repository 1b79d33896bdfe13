//! The circuit breaker of one ServiceNow instance, shared by every deliverer of a process and by its flush
//! (it lives in [`crate::Delivery`]).
//!
//! ServiceNow's rate limit answers 429 with a `Retry-After`; each deliverer honouring it for its own alert
//! is not enough, because every other queued alert would still be claimed and sent, each earning its own
//! 429. So the first answer with a `Retry-After` (a 429, or a 503 that carries one) opens the breaker until
//! the instant it names, and a run of [`OPEN_AFTER_UNAVAILABLE`] 503s without one opens it for the backoff
//! policy's ceiling of the run beyond that (growing as the 503s go on, up to the policy's cap). While it is open no deliverer claims or calls: the message is delayed until it
//! closes, plus jitter, and no attempt is counted. When it closes it is half-open: one call goes through as
//! a probe while the others keep waiting (at most [`PROBE_WAIT`] each time); a probe's success closes it,
//! another 429 opens it again.

use std::sync::Mutex;
use std::time::Duration;

use relay_core::BackoffPolicy;
use servicenow_client::Outcome;

/// 503s in a row, none with a `Retry-After`, that open the breaker.
pub const OPEN_AFTER_UNAVAILABLE: u32 = 3;
/// While a probe is in flight the others wait this long before asking again (a probe whose caller never
/// reports, say because its claim found the alert settled, frees the way after this).
pub const PROBE_WAIT: Duration = Duration::from_secs(10);

/// Whether a caller may call ServiceNow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: call.
    Call,
    /// Half-open, and this caller is the one probe: call, then report the outcome
    /// ([`Breaker::record`]) or, when no call was made after all, [`Breaker::release_probe`].
    Probe,
    /// Open (or a probe is in flight): no claim, no call before `until_ms` (epoch ms).
    Wait { until_ms: i64 },
}

#[derive(Debug, Default)]
struct State {
    /// Set while open or half-open: open until then; half-open once it has passed, until a success.
    open_until_ms: Option<i64>,
    /// A probe was admitted; the next is not before then.
    probe_until_ms: Option<i64>,
    unavailable_in_a_row: u32,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
    /// How long a run of 503s opens it (the ceiling of the run's length past the threshold).
    policy: BackoffPolicy,
    /// A disabled breaker never opens (every caller calls: what a plain worker pool does).
    disabled: bool,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Breaker {
    /// A closed breaker; a run of 503s opens it for `policy`'s ceilings.
    pub fn new(policy: BackoffPolicy) -> Breaker {
        Breaker {
            state: Mutex::default(),
            policy,
            disabled: false,
        }
    }

    /// A breaker that never opens (to measure what the breaker saves).
    pub fn disabled() -> Breaker {
        Breaker {
            disabled: true,
            ..Breaker::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // the state stays consistent whatever a panicking holder did: every write is one assignment
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the instance is closed to calls until some instant (epoch ms): `Some(t)` while the breaker is
    /// open (until it closes) or half-open with a probe in flight (until the probe's outcome is due).
    /// `None`: calls may go (a half-open breaker admits its probe through [`Breaker::admit`]).
    pub fn closed_until(&self, now_ms: i64) -> Option<i64> {
        let s = self.state();
        match (s.open_until_ms, s.probe_until_ms) {
            (Some(open), _) if open > now_ms => Some(open),
            (Some(_), Some(probe)) if probe > now_ms => Some(probe),
            _ => None,
        }
    }

    /// Ask before a claim and a call. Half-open, the first caller is the probe.
    pub fn admit(&self, now_ms: i64) -> Admit {
        let mut s = self.state();
        match (s.open_until_ms, s.probe_until_ms) {
            (None, _) => Admit::Call,
            (Some(open), _) if open > now_ms => Admit::Wait { until_ms: open },
            (Some(_), Some(probe)) if probe > now_ms => Admit::Wait { until_ms: probe },
            (Some(_), _) => {
                s.probe_until_ms = Some(now_ms.saturating_add(millis(PROBE_WAIT)));
                Admit::Probe
            }
        }
    }

    /// A probe that made no call after all: let the next caller probe.
    pub fn release_probe(&self) {
        self.state().probe_until_ms = None;
    }

    /// What a ServiceNow call answered (every call: lookups, creates, Batch API and Event API calls).
    pub fn record(&self, outcome: &Outcome, now_ms: i64) {
        if self.disabled {
            return;
        }
        let mut s = self.state();
        s.probe_until_ms = None;
        match outcome {
            Outcome::Retryable {
                retry_after: Some(wait),
                ..
            } => {
                let until = now_ms.saturating_add(millis(*wait));
                s.open_until_ms = Some(s.open_until_ms.map_or(until, |t| t.max(until)));
                s.unavailable_in_a_row = 0;
                tracing::warn!(open_until_ms = until, "ServiceNow asked to wait; no calls until then");
            }
            o if o.is_unavailable() => {
                s.unavailable_in_a_row += 1;
                if s.unavailable_in_a_row >= OPEN_AFTER_UNAVAILABLE {
                    let open_for = self.policy.ceiling(s.unavailable_in_a_row + 1 - OPEN_AFTER_UNAVAILABLE);
                    let until = now_ms.saturating_add(millis(open_for));
                    s.open_until_ms = Some(s.open_until_ms.map_or(until, |t| t.max(until)));
                    tracing::warn!(
                        open_until_ms = until,
                        "ServiceNow unavailable repeatedly; no calls until then"
                    );
                }
            }
            // no answer from the instance (a connection error, a timeout), or a request refused before it
            // was sent (status 0): says nothing about its limits
            Outcome::Retryable { .. } | Outcome::Ambiguous { .. } | Outcome::Permanent { status: 0, .. } => {}
            // the instance answered: it takes calls again
            Outcome::Created(_) | Outcome::Permanent { .. } | Outcome::Auth { .. } => {
                *s = State::default();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn limited(secs: u64) -> Outcome {
        Outcome::Retryable {
            retry_after: Some(Duration::from_secs(secs)),
            reason: "HTTP 429".into(),
        }
    }

    /// A created incident (the answer that closes the breaker and feeds the concurrency limit).
    pub(crate) fn created() -> Outcome {
        Outcome::Created(servicenow_client::CreatedRecord {
            table: "incident".into(),
            sys_id: "x".into(),
            number: None,
            link: String::new(),
        })
    }

    #[test]
    fn a_429_opens_until_its_retry_after_then_one_probe_goes() {
        let b = Breaker::new(BackoffPolicy::default());
        assert_eq!(b.admit(0), Admit::Call);
        b.record(&limited(60), 1_000);
        assert_eq!(b.closed_until(1_000), Some(61_000));
        assert_eq!(b.admit(30_000), Admit::Wait { until_ms: 61_000 });
        assert_eq!(b.closed_until(61_000), None);
        assert_eq!(b.admit(61_000), Admit::Probe);
        assert_eq!(b.admit(61_001), Admit::Wait { until_ms: 71_000 });
        assert_eq!(b.closed_until(61_001), Some(71_000));
        b.record(&created(), 62_000);
        assert_eq!(b.admit(62_000), Admit::Call);
        assert_eq!(b.closed_until(62_000), None);
    }

    #[test]
    fn a_probe_answered_429_opens_it_again() {
        let b = Breaker::new(BackoffPolicy::default());
        b.record(&limited(10), 0);
        assert_eq!(b.admit(10_000), Admit::Probe);
        b.record(&limited(20), 10_500);
        assert_eq!(b.admit(11_000), Admit::Wait { until_ms: 30_500 });
    }

    #[test]
    fn a_probe_that_made_no_call_lets_the_next_one_probe() {
        let b = Breaker::new(BackoffPolicy::default());
        b.record(&limited(1), 0);
        assert_eq!(b.admit(1_000), Admit::Probe);
        b.release_probe();
        assert_eq!(b.admit(1_001), Admit::Probe);
        // and one that never reports frees the way after PROBE_WAIT
        assert_eq!(b.admit(1_002 + millis(PROBE_WAIT)), Admit::Probe);
    }

    #[test]
    fn repeated_503s_open_it_and_timeouts_do_not() {
        let b = Breaker::new(BackoffPolicy::default());
        let down = Outcome::Retryable {
            retry_after: None,
            reason: "HTTP 503".into(),
        };
        let timeout = Outcome::Ambiguous {
            reason: "timed out".into(),
        };
        b.record(&down, 0);
        b.record(&timeout, 0);
        b.record(&down, 0);
        assert_eq!(b.admit(0), Admit::Call);
        b.record(&down, 5);
        // the policy's first ceiling (2 s), then doubling while the 503s go on
        assert_eq!(b.closed_until(5), Some(2_005));
        b.record(&down, 3_000);
        assert_eq!(b.closed_until(3_000), Some(7_000));
    }
}
