//! Defaults both modes share. One place, so the Lambda functions and `relay serve` cannot drift apart.

use std::time::Duration;

use relay_core::BackoffPolicy;

/// How long the ledger remembers an alert: the de-duplication horizon of re-sent webhooks and how long
/// `GET /v1/alerts/{id}` answers.
pub const LEDGER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// HTTP exchanges one ServiceNow call may make at worst, each bounded by the client's exchange timeout: an
/// OAuth token request and the request itself, both repeated once after a 401.
pub const EXCHANGES_PER_CALL: u32 = 4;

/// ServiceNow calls one realtime attempt makes at worst: the lookup by correlation id and the create.
pub const CALLS_PER_ATTEMPT: u32 = 2;

/// What a lease keeps over the longest attempt it covers: the ledger writes around the calls and the
/// scheduling delay of a loaded host.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest one delivery attempt can take when each HTTP exchange is bounded by `exchange_timeout`.
pub fn attempt_budget(exchange_timeout: Duration) -> Duration {
    exchange_timeout * (EXCHANGES_PER_CALL * CALLS_PER_ATTEMPT)
}

/// The claim lease of a deliverer whose attempts are bounded only by `exchange_timeout` (`relay serve`):
/// longer than a whole attempt, so no other deliverer takes an alert over while a call is still in flight.
/// The deliverer also renews it while a call is in flight.
pub fn lease_for_attempts(exchange_timeout: Duration) -> Duration {
    attempt_budget(exchange_timeout) + LEASE_MARGIN
}

/// The claim lease of a deliverer that the platform stops after `function_timeout` (a Lambda function):
/// nothing it started can outlive the invocation, so the lease only has to outlast the function.
pub fn lease_for_function(function_timeout: Duration) -> Duration {
    function_timeout + LEASE_MARGIN
}

/// ServiceNow's transaction quota for inbound REST calls: the base system's "REST Table API request
/// timeout" rule stops a transaction after 60 s, and a transaction keeps running when its client has gone.
pub const SERVICENOW_TRANSACTION_QUOTA: Duration = Duration::from_secs(60);

/// After an ambiguous create (timed out, or the connection lost after the request was sent) the insert may
/// still commit until the transaction quota ends it: no new create is sent before this much time has
/// passed; attempts before then only look the record up. The quota plus a margin for clock differences and
/// the request's time on the wire.
pub const SETTLE_AFTER_AMBIGUOUS: Duration = Duration::from_secs(75);

/// The most receives SQS allows a redrive policy (`maxReceiveCount` ≤ 1000).
pub const SQS_MAX_RECEIVE_COUNT: u32 = 1000;

/// Receives of a realtime message that are not delivery attempts, allowed for over the window: a claim
/// answered `NotBefore` (a `Retry-After` longer than a queue delay, at most a few per window), `Busy` (a
/// second copy of the message), an open circuit breaker, an unavailable ledger, a caught panic, a lost
/// claim. Each of these is delayed at least as long as an attempt at the same receive count would be
/// ([`BackoffPolicy::delay`] of the receive count), so past the first few they cost 450 s or more each.
pub const NON_ATTEMPT_RECEIVES: u32 = 50;

/// Receives kept below the limit: the deliverer gives an alert up itself (class `receive_limit`: DLQ
/// copy, ledger FAILED, notice) once its message's receive count reaches `limit - RECEIVE_LIMIT_RESERVE`,
/// so a failed dead-letter write can be retried this many times before SQS's redrive moves the message
/// silently.
pub const RECEIVE_LIMIT_RESERVE: u32 = 10;

/// The realtime queue's `maxReceiveCount` for `policy`: every attempt the policy can make over its window
/// ([`BackoffPolicy::max_attempts`]), plus the receives that are not attempts, plus the reserve for the
/// deliverer's own give-up; at most SQS's 1000. 260 for the default 24 h policy (template.yaml's
/// `MaxReceiveCount` default; a test keeps them equal).
pub fn max_receive_count(policy: &BackoffPolicy) -> u32 {
    policy
        .max_attempts()
        .saturating_add(NON_ATTEMPT_RECEIVES + RECEIVE_LIMIT_RESERVE)
        .min(SQS_MAX_RECEIVE_COUNT)
}

/// The longest delay the deliverer hands to a realtime queue with `change_visibility`. SQS counts its
/// 12 h visibility limit from the receive, and the local queue takes 12 h too; this leaves room for the
/// time between the receive and the change (a Lambda batching window, the function's own run). A longer
/// wait (a `Retry-After`, an open breaker) is kept as the ledger entry's `not_before_ms`: the message comes
/// back after this, the claim answers `NotBefore` and it is delayed again without an attempt.
pub const LONGEST_REDELAY: Duration = Duration::from_secs(11 * 3600 + 30 * 60);

/// How long a fetched secret is used before it is fetched again.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// After a signature mismatch, a cached signing secret at least this old is fetched again (rotation).
pub const SECRET_REFRESH_AFTER: Duration = Duration::from_secs(60);

/// Time allowed for one ServiceNow HTTP exchange (Lambda).
pub const SERVICENOW_TIMEOUT: Duration = Duration::from_secs(20);

/// Time allowed for one ServiceNow HTTP exchange (`relay serve`).
pub const LOCAL_SERVICENOW_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one flush may drain the batch queue.
pub const FLUSH_DRAIN_BUDGET: Duration = Duration::from_secs(60);

/// How long one whole flush may take: draining, claims, lookups, Batch API calls and settling.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(240);

/// The end of a flush's budget kept for settling what was sent (ledger writes and deletes): no claim, lookup
/// or ServiceNow call starts later than this before the deadline. One ServiceNow call in flight plus room
/// to store its results.
pub const FLUSH_SETTLE_RESERVE: Duration = Duration::from_secs(SERVICENOW_TIMEOUT.as_secs() + 10);

/// The settle reserve of a flush whose ServiceNow exchanges are bounded by `exchange_timeout` (`relay
/// serve`): one call in flight (each exchange repeated after a 401 at worst) plus room for the ledger writes
/// after it.
pub fn flush_settle_reserve(exchange_timeout: Duration) -> Duration {
    exchange_timeout * EXCHANGES_PER_CALL + LEASE_MARGIN
}

/// How many Batch API requests one flush has in flight at most: half of the default limit of concurrent
/// calls (each request also needs a batch-lane slot of that limit, so waiting realtime calls go first, and
/// holds an instance thread for its ≈ 4.5 s). A storm's 2,000 aggregates take ≈ 1 minute instead of 8.
pub const FLUSH_BATCH_CONCURRENCY: usize = 8;

/// How many records a flush settles (ledger writes) at the same time.
pub const FLUSH_SETTLE_CONCURRENCY: usize = 16;

/// The most batch messages one flush takes.
pub const FLUSH_MAX_MESSAGES: usize = 10_000;

/// The CloudWatch namespace of the metrics.
pub const METRICS_NAMESPACE: &str = "AlertRelay";

/// How long ingest waits for the alert of a lifecycle event that arrived before it (then 404): long enough
/// for a sender that posts the alert and its resolution back to back over two connections, short against
/// API Gateway's 29 s.
pub const EVENT_WAIT: Duration = Duration::from_secs(3);

/// How soon a lifecycle event waiting for its alert's record looks again, for its first
/// [`EVENT_FAST_WAITS`] attempts (then the backoff's delays): the record usually appears within seconds
/// (a batch aggregate's flush), and at most that many receives are spent on it.
pub const EVENT_WAIT_POLL: Duration = Duration::from_secs(15);

/// See [`EVENT_WAIT_POLL`].
pub const EVENT_FAST_WAITS: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_outlasts_the_longest_attempt() {
        // lookup + create, each a token request and a request, each repeated after a 401: 8 exchanges
        assert_eq!(attempt_budget(Duration::from_secs(10)), Duration::from_secs(80));
        assert_eq!(lease_for_attempts(Duration::from_secs(10)), Duration::from_secs(85));
        assert!(lease_for_attempts(SERVICENOW_TIMEOUT) > attempt_budget(SERVICENOW_TIMEOUT));
        assert_eq!(lease_for_function(Duration::from_secs(900)), Duration::from_secs(905));
    }

    #[test]
    fn the_receive_limit_covers_every_attempt_of_the_window_and_stays_within_sqs() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.max_attempts(), 200);
        assert_eq!(max_receive_count(&policy), 260);
        let long = BackoffPolicy {
            window: Duration::from_secs(48 * 3600),
            ..policy
        };
        assert_eq!(max_receive_count(&long), 452);
        let fast = BackoffPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            ..policy
        };
        assert_eq!(max_receive_count(&fast), SQS_MAX_RECEIVE_COUNT);
    }
}
