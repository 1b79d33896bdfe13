//! The small traits the pipeline runs over.
//!
//! The Lambda functions implement them with SQS, DynamoDB, Secrets Manager and SNS (`relay-aws`); the local
//! mode implements them with one SQLite file (`relay-local`). The pipeline cannot tell the difference, so
//! both adapters must honour the semantics documented on each method; the adapter test suites check them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "memory")]
pub mod memory;
pub mod transition;

/// Why a port call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The backing service could not be reached or answered with a transient error: try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backing service refused the request (bad name, permissions, malformed data): retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The named item (secret, queue, ledger entry) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A fenced ledger write carried a claim token that is no longer the entry's: another deliverer has
    /// claimed the alert since (or the entry changed state). Nothing was written; the caller must stop
    /// acting on the alert.
    #[error("stale claim: {0}")]
    Stale(String),
}

impl PortError {
    /// The [`PortError::Stale`] of a fenced write on `alert_id` with `token` while the entry is at `current`.
    pub fn stale_claim(alert_id: &str, current: u64, token: u64) -> PortError {
        PortError::Stale(format!(
            "ledger entry {alert_id} is at claim {current}; the caller holds claim {token}"
        ))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------------------

/// The largest message body a queue takes: SQS's limit (256 KiB). Every queue adapter refuses a larger body,
/// and an empty one, with [`PortError::Rejected`] naming its size, and enqueues nothing.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The longest delay a queue `send` takes (SQS `DelaySeconds`: 15 minutes). A message that must wait
/// longer is sent with this delay and its ledger entry carries the rest (`not_before_ms`): when it comes
/// back early, the claim answers [`Claim::NotBefore`] and it is put back.
pub const MAX_SEND_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

/// One message taken from a queue. The receipt is valid for this receive only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// When the message was first sent to the queue (epoch ms).
    pub sent_at_ms: i64,
    /// How many times the queue has handed this message out, this receive included (SQS
    /// `ApproximateReceiveCount`): 1 on the first receive. A redrive policy moves a message to its
    /// dead-letter queue once this passes `maxReceiveCount`.
    pub receive_count: u32,
}

/// A durable queue with visibility timeouts: the realtime queue, the batch queue, a dead-letter queue.
#[async_trait]
pub trait AlertQueue: Send + Sync {
    /// Enqueue `body`; it becomes visible after `delay` (0 = at once; at most [`MAX_SEND_DELAY`]). Returns
    /// the message id.
    /// An `Err` means the message is NOT on the queue.
    async fn send(&self, body: &str, delay: Duration) -> Result<String, PortError>;
    /// Take up to `max` visible messages, waiting up to `wait` for the first one. Taken messages are
    /// invisible to other receivers for the queue's visibility timeout, then reappear unless deleted.
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, PortError>;
    /// Remove a received message for good (after its record exists, or after it was moved elsewhere).
    async fn delete(&self, receipt: &str) -> Result<(), PortError>;
    /// [`AlertQueue::delete`] of several received messages in as few calls as the service allows; one
    /// result per receipt, in order. A failed delete only means the message comes back.
    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>> {
        let mut out = Vec::with_capacity(receipts.len());
        for r in receipts {
            out.push(self.delete(r).await);
        }
        out
    }
    /// Make a received message visible again after `delay` (counted from now). `delay` ≤ 12 h.
    async fn change_visibility(&self, receipt: &str, delay: Duration) -> Result<(), PortError>;
    /// Approximate number of messages on the queue, visible or not.
    async fn depth(&self) -> Result<u64, PortError>;
}

// ---------------------------------------------------------------------------------------------------------
// Ledger
// ---------------------------------------------------------------------------------------------------------

/// Where an alert is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    /// Written at ingest; the enqueue has not been confirmed yet.
    Accepted,
    /// On a queue, waiting for delivery (realtime) or for the next flush (batch).
    Queued,
    /// Claimed by one deliverer until `lease_until_ms`.
    InProgress,
    /// The last attempt failed with a retryable error; another attempt is scheduled.
    Retrying,
    /// A member of a sealed batch aggregate (`aggregate` names its entry): the aggregate's delivery settles
    /// it, and no claim is granted on it alone. Not final.
    Aggregated,
    /// The record exists in ServiceNow (`record` is set). Final.
    Completed,
    /// Given up (permanent error or retry window exhausted); dead-lettered and notified. Final until replayed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "ACCEPTED",
            DeliveryState::Queued => "QUEUED",
            DeliveryState::InProgress => "IN_PROGRESS",
            DeliveryState::Retrying => "RETRYING",
            DeliveryState::Aggregated => "AGGREGATED",
            DeliveryState::Completed => "COMPLETED",
            DeliveryState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ACCEPTED" => DeliveryState::Accepted,
            "QUEUED" => DeliveryState::Queued,
            "IN_PROGRESS" => DeliveryState::InProgress,
            "RETRYING" => DeliveryState::Retrying,
            "AGGREGATED" => DeliveryState::Aggregated,
            "COMPLETED" => DeliveryState::Completed,
            "FAILED" => DeliveryState::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, DeliveryState::Completed | DeliveryState::Failed)
    }
}

/// The ServiceNow record an alert became: the cross-system reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    pub table: String,
    pub sys_id: String,
    /// Record number (INC0010001…); tables without numbering have none.
    pub number: Option<String>,
    /// Link to the record in the instance UI.
    pub link: String,
    /// The alert became a journal entry (a work note) on this record, which an earlier alert of its
    /// thread opened, rather than the record itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub note: bool,
}

/// One alert's delivery record. Keyed by `alert_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub alert_id: String,
    pub webhook_id: Option<String>,
    pub state: DeliveryState,
    /// Delivery attempts started (claims granted), across all deliverers.
    pub attempts: u32,
    /// When ingest accepted the alert (epoch ms): the 24 h retry window counts from here.
    pub first_received_at_ms: i64,
    pub updated_at_ms: i64,
    /// For `InProgress`: the claim is held until then (epoch ms); a later claim may take it over.
    pub lease_until_ms: Option<i64>,
    /// Set once an attempt's outcome was ambiguous: every later attempt first looks the record up by
    /// correlation id instead of creating blindly. Never cleared (kept through `fail`, `reopen` and replay).
    pub needs_lookup: bool,
    /// The fencing token: the claim generation. Every granted claim (and every `reopen`) increments it;
    /// `complete`, `retry_later`, `fail`, `reopen` and `extend` take the token the caller read and refuse
    /// with [`PortError::Stale`] when it is no longer the entry's, so a holder whose lease was taken over
    /// can neither complete nor fail the alert. 0 for an entry never claimed (and entries of earlier
    /// releases).
    #[serde(default)]
    pub claim_token: u64,
    /// After an ambiguous create: no attempt may create the record before this instant (epoch ms), because
    /// the earlier insert may still commit until then; attempts before it look the record up only. Kept
    /// as the latest of all settle windows recorded.
    #[serde(default)]
    pub no_create_before_ms: Option<i64>,
    /// No attempt at all before this instant (epoch ms): a `Retry-After` longer than a queue delay can
    /// carry. A claim before it answers [`Claim::NotBefore`].
    #[serde(default)]
    pub not_before_ms: Option<i64>,
    /// For a member of a batch aggregate: the aggregate's ledger key (`batch:…`). Set when the aggregate is
    /// sealed ([`Ledger::aggregate`]) and kept, so a replayed member returns to `Aggregated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// For a batch aggregate's own entry: the queue message (envelope JSON) that delivers it, persisted when
    /// it is sealed so that whoever finds one of its members can send it on (at most
    /// [`MAX_MESSAGE_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// What routing decided (for the status API and the audit trail).
    pub rule: String,
    pub record_type: String,
    pub table: String,
    pub severity: String,
    pub delivery: String,
    pub correlation_id: String,
    pub config_hash: String,
    /// Set when `Completed`.
    pub record: Option<RecordRef>,
    /// The last failure, classified (`retryable`, `ambiguous`, `auth`, `permanent`, `window_exhausted`).
    pub last_error_class: Option<String>,
    pub last_error: Option<String>,
    /// When the backing store may forget the entry (epoch seconds; DynamoDB TTL).
    pub expires_at_s: i64,
}

/// Result of [`Ledger::accept`].
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // returned once per call and matched at once: boxing would only add an allocation
pub enum Accept {
    /// No entry existed for this alert id: the new one was written.
    New,
    /// An entry already exists (re-sent webhook): nothing was written; here it is.
    Duplicate(LedgerEntry),
}

/// Result of [`Ledger::claim`].
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller now holds the alert (state `InProgress`, `attempts` already incremented).
    Claimed(LedgerEntry),
    /// The record already exists: ack the message without calling ServiceNow.
    Completed(LedgerEntry),
    /// The alert was given up on: ack the message.
    Failed(LedgerEntry),
    /// Another deliverer holds an unexpired claim until `lease_until_ms`: retry later.
    Busy { lease_until_ms: i64 },
    /// The entry must not be attempted before `until_ms` (its `not_before_ms`): retry then.
    NotBefore { until_ms: i64 },
    /// The alert is a member of a sealed batch aggregate (the entry's `aggregate` names it): the aggregate's
    /// delivery settles it; the caller must not deliver it alone.
    Aggregated(LedgerEntry),
    /// No entry for this alert id.
    Missing,
}

/// What [`Ledger::retry_later`] records about a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryLater {
    /// `retryable`, `ambiguous`, `auth`, …
    pub error_class: String,
    pub error: String,
    /// OR-ed into the entry's `needs_lookup`.
    pub needs_lookup: bool,
    /// The claim being released made no ServiceNow call (a flush deferred its record): `attempts` goes
    /// back down by one, so the alert is not looked up, nor planned alone, as if it had been sent.
    pub unsent: bool,
    /// The settle window of an ambiguous create; the entry keeps the latest of this and its own.
    pub no_create_before_ms: Option<i64>,
    /// Replaces the entry's `not_before_ms` (None clears it).
    pub not_before_ms: Option<i64>,
}

impl RetryLater {
    pub fn new(error_class: impl Into<String>, error: impl Into<String>) -> Self {
        RetryLater {
            error_class: error_class.into(),
            error: error.into(),
            ..RetryLater::default()
        }
    }

    /// The same, with `needs_lookup` set.
    pub fn needing_lookup(self, needs_lookup: bool) -> Self {
        RetryLater { needs_lookup, ..self }
    }
}

/// The delivery ledger: attempts, state and the resulting ServiceNow record, per alert id.
/// Every write that changes state is conditional, so two concurrent deliverers never both create a record;
/// the writes after a claim are fenced by the claim's token ([`LedgerEntry::claim_token`]).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Write `entry` if no entry exists for its alert id (or the existing one has expired).
    async fn accept(&self, entry: &LedgerEntry) -> Result<Accept, PortError>;
    /// `Accepted` → `Queued`, once the enqueue is confirmed. No-op in any other state.
    async fn mark_queued(&self, alert_id: &str, now_ms: i64) -> Result<(), PortError>;
    /// Delete an `Accepted` entry whose enqueue failed, so the sender's retry is accepted afresh.
    async fn forget(&self, alert_id: &str) -> Result<(), PortError>;
    /// Take the alert for one delivery attempt: allowed from `Accepted`, `Queued`, `Retrying`, or
    /// `InProgress` whose lease has expired (`lease_until_ms < now_ms`), unless `not_before_ms > now_ms`
    /// ([`Claim::NotBefore`]); an `Aggregated` entry answers [`Claim::Aggregated`].
    /// Increments `attempts` and `claim_token`, sets `InProgress` and
    /// `lease_until_ms = now_ms + lease_ms`.
    async fn claim(&self, alert_id: &str, now_ms: i64, lease_ms: i64) -> Result<Claim, PortError>;
    /// Keep holding a claim: `lease_until_ms = max(lease_until_ms, now_ms + lease_ms)` while the entry is
    /// `InProgress` with `token`. Returns the new `lease_until_ms`; [`PortError::Stale`] when the claim is
    /// no longer the caller's (taken over, or settled).
    async fn extend(&self, alert_id: &str, token: u64, now_ms: i64, lease_ms: i64) -> Result<i64, PortError>;
    /// Any non-final state → `Completed` with `record`. Idempotent: completing a completed entry keeps the
    /// first record. Fenced: [`PortError::Stale`] unless `token` is the entry's `claim_token`.
    async fn complete(&self, alert_id: &str, token: u64, record: &RecordRef, now_ms: i64) -> Result<(), PortError>;
    /// Non-final → `Retrying` with the error; clears the lease; `needs_lookup` is OR-ed in, the settle
    /// window kept at its latest, `not_before_ms` replaced. Does nothing to a `Completed`, `Failed` or
    /// `Aggregated` entry (a member is released only by its aggregate's outcome).
    /// Fenced like `complete`.
    async fn retry_later(&self, alert_id: &str, token: u64, retry: &RetryLater, now_ms: i64) -> Result<(), PortError>;
    /// Non-final → `Failed` with the error (`needs_lookup` kept). Does nothing to a `Completed` entry.
    /// Fenced like `complete`.
    async fn fail(
        &self,
        alert_id: &str,
        token: u64,
        error_class: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), PortError>;
    /// `Failed` → `Queued` (`Aggregated` for a member of an aggregate) for a replay from the dead-letter queue: the retry window restarts at `now_ms`
    /// (`first_received_at_ms = now_ms`, `attempts = 0`, `not_before_ms` cleared), `needs_lookup` and the
    /// settle window are kept, `expires_at_s` is raised to at least `expires_at_s` and `claim_token` is
    /// incremented. Returns false when the entry is not `Failed`; [`PortError::Stale`] when it is but
    /// `token` is not its `claim_token` (it changed since the caller read it).
    async fn reopen(&self, alert_id: &str, token: u64, now_ms: i64, expires_at_s: i64) -> Result<bool, PortError>;
    async fn get(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError>;
    /// Seal a batch aggregate before its record is sent, in ONE atomic write: create `plan` (the aggregate's
    /// own entry, written as given: its holder is the caller) and move every member `(key, token)` from
    /// `InProgress` under `token` to `Aggregated`, with `aggregate = plan.alert_id` and `claim_token`
    /// incremented. All or nothing: when a live entry exists under the plan's key, or any member is not
    /// held under its token, nothing is written and the answer is [`PortError::Stale`]. At most
    /// [`MAX_AGGREGATE_MEMBERS`] members ([`PortError::Rejected`] otherwise).
    async fn aggregate(&self, plan: &LedgerEntry, members: &[(String, u64)], now_ms: i64) -> Result<(), PortError>;
    /// The records being watched: live entries whose `delivery` is [`WATCH_DELIVERY`] and whose state is
    /// `Queued`, with keys greater than `after` (all, when None), in ascending key order, at most `limit`
    /// (at most [`MAX_WATCH_PAGE`]). A page shorter than `limit` may still not be the last (a backing
    /// store may page on its own): the caller pages on with the last key until a page comes back empty.
    async fn watched(&self, after: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, PortError>;
    /// Compare-and-set of a watch entry's `plan`: when the entry exists and its plan is `expected` (None: it
    /// has none), set the plan to `plan` and `updated_at_ms` to `now_ms` and, with `done`, its state to
    /// `Completed` (it is no longer watched). Ok(false), nothing written, when the plan is no longer
    /// `expected` (another sync got there first) or the entry is missing.
    async fn observe(
        &self,
        key: &str,
        expected: Option<&str>,
        plan: &str,
        done: bool,
        now_ms: i64,
    ) -> Result<bool, PortError>;
}

/// The `delivery` of a watch entry: the ledger entry (key `watch:<table>:<sys_id>`, state `Queued` while
/// watched) through which the sync follows a record the relay made, its last known state in `plan`.
pub const WATCH_DELIVERY: &str = "watch";
/// The `delivery` of a thread's own entry (`thread:<table>:<hex>`).
pub const THREAD_DELIVERY: &str = "thread";
/// The `delivery` of a lifecycle event's entry (`event:<hex>`).
pub const EVENT_DELIVERY: &str = "event";
/// The `delivery` of a callback's entry (`callback:<webhook id>`).
pub const CALLBACK_DELIVERY: &str = "callback";

/// The `delivery` of every ledger entry that is not an alert's (nor a batch aggregate's): what listings
/// of alerts leave out.
pub const NOT_ALERT_DELIVERIES: [&str; 4] = [THREAD_DELIVERY, EVENT_DELIVERY, CALLBACK_DELIVERY, WATCH_DELIVERY];

/// The most entries one [`Ledger::watched`] call returns.
pub const MAX_WATCH_PAGE: u32 = 1000;

/// The most members one [`Ledger::aggregate`] seals: DynamoDB's TransactWriteItems writes at most 100 items,
/// the aggregate's own entry and 99 members.
pub const MAX_AGGREGATE_MEMBERS: usize = 99;

// ---------------------------------------------------------------------------------------------------------
// Secrets, notifications, time
// ---------------------------------------------------------------------------------------------------------

/// Where credentials and signing secrets live (Secrets Manager, or a local file / environment).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current value of the secret `id` (an ARN or name for Secrets Manager, a key locally).
    async fn fetch(&self, id: &str) -> Result<String, PortError>;
}

/// What the on-call person reads when an alert could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNotice {
    pub alert_id: String,
    pub severity: String,
    pub record_type: String,
    pub table: String,
    pub rule: String,
    pub correlation_id: String,
    /// `permanent`, `auth`, `window_exhausted`, …
    pub error_class: String,
    /// ServiceNow's message (never the alert payload).
    pub error: String,
    pub attempts: u32,
    pub first_received_at_ms: i64,
}

/// Delivery-failure notifications (SNS topic, or the local log).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn delivery_failed(&self, notice: &FailureNotice) -> Result<(), PortError>;
}

/// The time source. The core never reads the clock; the pipeline asks this.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_state_round_trips_through_its_name() {
        for s in [
            DeliveryState::Accepted,
            DeliveryState::Queued,
            DeliveryState::InProgress,
            DeliveryState::Retrying,
            DeliveryState::Aggregated,
            DeliveryState::Completed,
            DeliveryState::Failed,
        ] {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert_eq!(DeliveryState::parse("DONE"), None);
        assert!(DeliveryState::Completed.is_final() && !DeliveryState::Retrying.is_final());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 3_000);
        c.set(5);
        assert_eq!(c.now_ms(), 5);
    }
}
