//! Defaults both modes share. One place, so the Lambda functions and `relay serve` cannot drift apart.

use std::time::Duration;

/// How long the ledger remembers an alert: the de-duplication horizon of re-sent webhooks and how long
/// `GET /v1/alerts/{id}` answers.
pub const LEDGER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a delivery claim holds an alert before another deliverer may take it over.
pub const LEASE: Duration = Duration::from_secs(120);

/// How long a fetched secret is used before it is fetched again.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// After a signature mismatch, a cached signing secret at least this old is fetched again (rotation).
pub const SECRET_REFRESH_AFTER: Duration = Duration::from_secs(60);

/// Time allowed for one ServiceNow HTTP exchange.
pub const SERVICENOW_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one flush may drain the batch queue.
pub const FLUSH_DRAIN_BUDGET: Duration = Duration::from_secs(60);

/// How long one whole flush may take: draining, claims, lookups, Batch API calls and settling.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(240);

/// The end of a flush's budget kept for settling what was sent (ledger writes and deletes): no claim, lookup
/// or ServiceNow call starts later than this before the deadline. One ServiceNow call in flight plus room
/// to store its results.
pub const FLUSH_SETTLE_RESERVE: Duration = Duration::from_secs(SERVICENOW_TIMEOUT.as_secs() + 10);

/// How many records a flush settles (ledger writes) at the same time.
pub const FLUSH_SETTLE_CONCURRENCY: usize = 16;

/// The most batch messages one flush takes.
pub const FLUSH_MAX_MESSAGES: usize = 10_000;

/// The CloudWatch namespace of the metrics.
pub const METRICS_NAMESPACE: &str = "AlertRelay";
