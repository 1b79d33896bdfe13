//! [`Ledger`] over Amazon DynamoDB: one item per alert id, every state change a conditional write.
//!
//! Item layout (partition key `alert_id` (S); TTL attribute `expires_at`, epoch seconds):
//!
//! | attribute | type | |
//! |---|---|---|
//! | `alert_id` | S | partition key |
//! | `state` | S | `ACCEPTED`, `QUEUED`, `IN_PROGRESS`, `RETRYING`, `AGGREGATED`, `COMPLETED`, `FAILED` |
//! | `attempts` | N | incremented atomically by each granted claim (`ADD`) |
//! | `first_received_at_ms`, `updated_at_ms` | N | epoch ms |
//! | `lease_until_ms` | N | only while a claim is held |
//! | `needs_lookup` | BOOL | |
//! | `webhook_id`, `last_error_class`, `last_error` | S | only when set |
//! | `rule`, `record_type`, `table`, `severity`, `delivery`, `correlation_id`, `config_hash` | S | routing |
//! | `record` | M | `{table, sys_id, number?, link}` once completed |
//! | `expires_at` | N | TTL, epoch seconds |
//! | `claim_token` | N | fencing token: `ADD`ed by each granted claim and each reopen; absent = 0 |
//! | `no_create_before_ms`, `not_before_ms` | N | only when set |
//! | `aggregate` | S | a member of a batch aggregate: the aggregate's key |
//! | `plan` | S | a batch aggregate's own item: the queue message that delivers it (< 256 KiB); a watch entry's: the record's last known state |
//! | `watch_shard` | S | `"1"`, only on a watch entry (`delivery` `watch`) while it is watched: the key of the `watched` index |
//!
//! The sparse global secondary index `watched` (hash key `watch_shard`, range key `alert_id`, projection ALL)
//! holds only the items that carry `watch_shard`: `accept` writes it on a watch entry written `QUEUED`, and
//! `observe` with `done` removes it. [`Ledger::watched`] queries it (`dynamo/watch.rs`).
//!
//! Sealing an aggregate ([`Ledger::aggregate`]) is one TransactWriteItems: the aggregate's Put and one
//! conditional Update per member, all or nothing.
//!
//! Items are mapped to and from [`LedgerEntry`] by `serde_dynamo` in `dynamo/item.rs`, which holds this
//! layout; items written by earlier releases read back unchanged.
//!
//! DynamoDB's TTL deletes expired items late (up to days), so every read treats an item whose
//! `expires_at` is not in the future as absent, and every state change requires a live item.
//! Expiry is judged against the machine's clock (the `Ledger` methods without a `now` argument must too).
//!
//! This file holds the [`Ledger`] operations; `dynamo/expression.rs` the attribute and condition helpers
//! they are written with, `dynamo/request.rs` the consistent read and the conditional update they share,
//! `dynamo/seal.rs` the transaction that seals an aggregate, `dynamo/watch.rs` the watch entries' query and
//! compare-and-set.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use relay_ports::{Accept, Claim, DeliveryState, Ledger, LedgerEntry, PortError, RecordRef, RetryLater};

use crate::error::port_error;

mod expression;
mod item;
mod request;
mod seal;
mod watch;

use expression::{LIVE, fence, is_condition_failure, n, names, now_s, s, state};
use item::{record_value, to_item};

/// How often a claim or accept that lost a race re-reads and tries again before giving up.
const RACE_RETRIES: usize = 8;

/// The delivery ledger in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    /// A ledger in `table` using the shared SDK configuration.
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::from_client(Client::new(config), table)
    }

    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    /// Conditional PutItem: `attribute_not_exists(alert_id) OR expires_at <= now`. On conflict the stored
    /// entry is read back (consistently) and returned as `Duplicate`.
    async fn accept(&self, entry: &LedgerEntry) -> Result<Accept, PortError> {
        if entry.alert_id.is_empty() {
            return Err(PortError::Rejected("ledger accept: alert_id is empty".into()));
        }
        let item = to_item(entry).map_err(|e| self.malformed(&entry.alert_id, e))?;
        for _ in 0..RACE_RETRIES {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(#alert_id) OR #expires_at <= :now_s")
                .set_expression_attribute_names(names(&["alert_id", "expires_at"]))
                .expression_attribute_values(":now_s", n(now_s()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(Accept::New),
                Err(e) if is_condition_failure(&e) => {
                    if let Some(existing) = self.read(&entry.alert_id).await? {
                        return Ok(Accept::Duplicate(existing));
                    }
                    // Forgotten or expired between the write and the read: try the write again.
                }
                Err(e) => return Err(port_error(&self.op("PutItem", &entry.alert_id), e)),
            }
        }
        Err(PortError::Unavailable(format!(
            "{}: kept racing with concurrent writers",
            self.op("PutItem", &entry.alert_id)
        )))
    }

    async fn mark_queued(&self, alert_id: &str, now_ms: i64) -> Result<(), PortError> {
        self.update(
            "UpdateItem(mark_queued)",
            alert_id,
            "SET #state = :queued, #updated_at_ms = :now",
            &format!("{LIVE} AND #state = :accepted"),
            &["alert_id", "expires_at", "state", "updated_at_ms"],
            vec![
                (":queued", state(DeliveryState::Queued)),
                (":accepted", state(DeliveryState::Accepted)),
                (":now", n(now_ms)),
                (":now_s", n(now_s())),
            ],
        )
        .await?;
        Ok(())
    }

    /// Conditional DeleteItem (`state = ACCEPTED`); any other state, or no entry, is left alone.
    async fn forget(&self, alert_id: &str) -> Result<(), PortError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("alert_id", s(alert_id))
            .condition_expression("#state = :accepted")
            .set_expression_attribute_names(names(&["state"]))
            .expression_attribute_values(":accepted", state(DeliveryState::Accepted))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(port_error(&self.op("DeleteItem", alert_id), e)),
        }
    }

    /// Conditional UpdateItem that sets `IN_PROGRESS` and the lease and `ADD`s 1 to `attempts` and
    /// `claim_token` (ReturnValues ALL_NEW). When the condition fails the entry is read and mapped to
    /// `Completed` / `Failed` / `Busy` / `NotBefore` / `Missing`.
    async fn claim(&self, alert_id: &str, now_ms: i64, lease_ms: i64) -> Result<Claim, PortError> {
        if lease_ms <= 0 {
            return Err(PortError::Rejected(format!(
                "ledger claim of {alert_id}: lease_ms must be positive, is {lease_ms}"
            )));
        }
        for _ in 0..RACE_RETRIES {
            let granted = self
                .update(
                    "UpdateItem(claim)",
                    alert_id,
                    "SET #state = :in_progress, #lease_until_ms = :lease, #updated_at_ms = :now \
                     ADD #attempts :one, #claim_token :one",
                    &format!(
                        "{LIVE} AND (#state IN (:accepted, :queued, :retrying) \
                         OR (#state = :in_progress AND #lease_until_ms < :now)) \
                         AND (attribute_not_exists(#not_before_ms) OR #not_before_ms <= :now)"
                    ),
                    &[
                        "alert_id",
                        "expires_at",
                        "state",
                        "lease_until_ms",
                        "updated_at_ms",
                        "attempts",
                        "claim_token",
                        "not_before_ms",
                    ],
                    vec![
                        (":in_progress", state(DeliveryState::InProgress)),
                        (":accepted", state(DeliveryState::Accepted)),
                        (":queued", state(DeliveryState::Queued)),
                        (":retrying", state(DeliveryState::Retrying)),
                        (":lease", n(now_ms.saturating_add(lease_ms))),
                        (":now", n(now_ms)),
                        (":one", n(1)),
                        (":now_s", n(now_s())),
                    ],
                )
                .await?;
            if let Some(entry) = granted {
                return Ok(Claim::Claimed(entry));
            }
            match self.read(alert_id).await? {
                None => return Ok(Claim::Missing),
                Some(e) if e.state == DeliveryState::Completed => return Ok(Claim::Completed(e)),
                Some(e) if e.state == DeliveryState::Failed => return Ok(Claim::Failed(e)),
                Some(e) if e.state == DeliveryState::Aggregated => return Ok(Claim::Aggregated(e)),
                Some(LedgerEntry {
                    state: DeliveryState::InProgress,
                    lease_until_ms: Some(until),
                    ..
                }) if until >= now_ms => {
                    return Ok(Claim::Busy { lease_until_ms: until });
                }
                Some(LedgerEntry {
                    not_before_ms: Some(until_ms),
                    ..
                }) if until_ms > now_ms => return Ok(Claim::NotBefore { until_ms }),
                // The entry changed between the write and the read (claimable again): try again.
                Some(_) => continue,
            }
        }
        Err(PortError::Unavailable(format!(
            "{}: kept racing with concurrent writers",
            self.op("UpdateItem(claim)", alert_id)
        )))
    }

    async fn extend(&self, alert_id: &str, token: u64, now_ms: i64, lease_ms: i64) -> Result<i64, PortError> {
        let until = now_ms.saturating_add(lease_ms);
        let (fenced, token_value) = fence(token);
        let mut values = vec![
            (":in_progress", state(DeliveryState::InProgress)),
            (":until", n(until)),
            (":now_s", n(now_s())),
        ];
        values.extend(token_value);
        let done = self
            .update(
                "UpdateItem(extend)",
                alert_id,
                "SET #lease_until_ms = :until",
                &format!("{LIVE} AND #state = :in_progress AND {fenced} AND #lease_until_ms < :until"),
                &["alert_id", "expires_at", "state", "claim_token", "lease_until_ms"],
                values,
            )
            .await?;
        if done.is_some() {
            return Ok(until);
        }
        match self.read(alert_id).await? {
            None => Err(self.missing(alert_id)),
            Some(e) if e.claim_token != token => Err(PortError::stale_claim(alert_id, e.claim_token, token)),
            Some(LedgerEntry {
                state: DeliveryState::InProgress,
                lease_until_ms: Some(current),
                ..
            }) => Ok(current), // already held at least that long
            Some(e) => Err(PortError::Stale(format!(
                "ledger entry {alert_id} is {}, not claimed",
                e.state.as_str()
            ))),
        }
    }

    async fn complete(&self, alert_id: &str, token: u64, record: &RecordRef, now_ms: i64) -> Result<(), PortError> {
        let record = record_value(record).map_err(|e| self.malformed(alert_id, e))?;
        let (fenced, token_value) = fence(token);
        let mut values = vec![
            (":completed", state(DeliveryState::Completed)),
            (":accepted", state(DeliveryState::Accepted)),
            (":queued", state(DeliveryState::Queued)),
            (":in_progress", state(DeliveryState::InProgress)),
            (":retrying", state(DeliveryState::Retrying)),
            (":aggregated", state(DeliveryState::Aggregated)),
            (":record", record),
            (":now", n(now_ms)),
            (":now_s", n(now_s())),
        ];
        values.extend(token_value);
        let done = self
            .update(
                "UpdateItem(complete)",
                alert_id,
                "SET #state = :completed, #record = :record, #updated_at_ms = :now REMOVE #lease_until_ms",
                &format!(
                    "{LIVE} AND {fenced} AND #state IN (:accepted, :queued, :in_progress, :retrying, :aggregated)"
                ),
                &[
                    "alert_id",
                    "expires_at",
                    "state",
                    "record",
                    "updated_at_ms",
                    "lease_until_ms",
                    "claim_token",
                ],
                values,
            )
            .await?;
        if done.is_some() {
            return Ok(());
        }
        // Stale, or already final (Completed keeps its first record; Failed stays Failed), or missing.
        self.after_refused_write(alert_id, token).await
    }

    async fn retry_later(&self, alert_id: &str, token: u64, retry: &RetryLater, now_ms: i64) -> Result<(), PortError> {
        let mut update = String::from(
            "SET #state = :retrying, #last_error_class = :class, #last_error = :error, #updated_at_ms = :now",
        );
        let mut remove = vec!["#lease_until_ms"];
        let mut attr_names = vec![
            "alert_id",
            "expires_at",
            "state",
            "last_error_class",
            "last_error",
            "updated_at_ms",
            "lease_until_ms",
            "claim_token",
            "not_before_ms",
        ];
        let (fenced, token_value) = fence(token);
        let mut values = vec![
            (":retrying", state(DeliveryState::Retrying)),
            (":accepted", state(DeliveryState::Accepted)),
            (":queued", state(DeliveryState::Queued)),
            (":in_progress", state(DeliveryState::InProgress)),
            (":class", s(&retry.error_class)),
            (":error", s(&retry.error)),
            (":now", n(now_ms)),
            (":now_s", n(now_s())),
        ];
        values.extend(token_value);
        if retry.needs_lookup {
            update.push_str(", #needs_lookup = :true");
            attr_names.push("needs_lookup");
            values.push((":true", AttributeValue::Bool(true)));
        }
        if let Some(settle) = retry.no_create_before_ms {
            // Keep the latest settle window: read it (the write below is fenced, so the entry cannot have
            // been claimed in between without the write failing).
            let current = match self.read(alert_id).await? {
                Some(e) => e.no_create_before_ms,
                None => return Err(self.missing(alert_id)),
            };
            update.push_str(", #no_create_before_ms = :settle");
            attr_names.push("no_create_before_ms");
            values.push((":settle", n(current.map_or(settle, |c| c.max(settle)))));
        }
        match retry.not_before_ms {
            Some(t) => {
                update.push_str(", #not_before_ms = :not_before");
                values.push((":not_before", n(t)));
            }
            None => remove.push("#not_before_ms"),
        }
        update.push_str(" REMOVE ");
        update.push_str(&remove.join(", "));
        if retry.unsent {
            // the released claim made no call: it does not count as an attempt
            update.push_str(" ADD #attempts :minus_one");
            attr_names.push("attempts");
            values.push((":minus_one", n(-1)));
        }
        let done = self
            .update(
                "UpdateItem(retry_later)",
                alert_id,
                &update,
                &format!("{LIVE} AND {fenced} AND #state IN (:accepted, :queued, :in_progress, :retrying)"),
                &attr_names,
                values,
            )
            .await?;
        if done.is_some() {
            return Ok(());
        }
        self.after_refused_write(alert_id, token).await // Completed or Failed: left alone.
    }

    async fn fail(
        &self,
        alert_id: &str,
        token: u64,
        error_class: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), PortError> {
        let (fenced, token_value) = fence(token);
        let mut values = vec![
            (":failed", state(DeliveryState::Failed)),
            (":completed", state(DeliveryState::Completed)),
            (":class", s(error_class)),
            (":error", s(error)),
            (":now", n(now_ms)),
            (":now_s", n(now_s())),
        ];
        values.extend(token_value);
        let done = self
            .update(
                "UpdateItem(fail)",
                alert_id,
                "SET #state = :failed, #last_error_class = :class, #last_error = :error, #updated_at_ms = :now \
                 REMOVE #lease_until_ms",
                &format!("{LIVE} AND {fenced} AND #state <> :completed"),
                &[
                    "alert_id",
                    "expires_at",
                    "state",
                    "last_error_class",
                    "last_error",
                    "updated_at_ms",
                    "lease_until_ms",
                    "claim_token",
                ],
                values,
            )
            .await?;
        if done.is_some() {
            return Ok(());
        }
        self.after_refused_write(alert_id, token).await // Completed: left alone.
    }

    async fn reopen(&self, alert_id: &str, token: u64, now_ms: i64, expires_at_s: i64) -> Result<bool, PortError> {
        // Read first: the expiry is only ever raised, and a stale token must be told apart from "not Failed".
        let current = match self.read(alert_id).await? {
            Some(e) if e.state == DeliveryState::Failed => e,
            _ => return Ok(false),
        };
        if current.claim_token != token {
            return Err(PortError::stale_claim(alert_id, current.claim_token, token));
        }
        let (fenced, token_value) = fence(token);
        // a member of an aggregate goes back to its aggregate, which the replay reopens too
        let reopened = if current.aggregate.is_some() {
            DeliveryState::Aggregated
        } else {
            DeliveryState::Queued
        };
        let mut values = vec![
            (":queued", state(reopened)),
            (":failed", state(DeliveryState::Failed)),
            (":zero", n(0)),
            (":one", n(1)),
            (":now", n(now_ms)),
            (":expires", n(current.expires_at_s.max(expires_at_s))),
            (":now_s", n(now_s())),
        ];
        values.extend(token_value);
        let done = self
            .update(
                "UpdateItem(reopen)",
                alert_id,
                "SET #state = :queued, #attempts = :zero, #first_received_at_ms = :now, #updated_at_ms = :now, \
                 #expires_at = :expires ADD #claim_token :one REMOVE #lease_until_ms, #not_before_ms",
                &format!("{LIVE} AND {fenced} AND #state = :failed"),
                &[
                    "alert_id",
                    "expires_at",
                    "state",
                    "attempts",
                    "first_received_at_ms",
                    "updated_at_ms",
                    "lease_until_ms",
                    "claim_token",
                    "not_before_ms",
                ],
                values,
            )
            .await?;
        if done.is_some() {
            return Ok(true);
        }
        match self.read(alert_id).await? {
            Some(e) if e.state == DeliveryState::Failed && e.claim_token != token => {
                Err(PortError::stale_claim(alert_id, e.claim_token, token))
            }
            _ => Ok(false),
        }
    }

    async fn get(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError> {
        self.read(alert_id).await
    }

    /// One TransactWriteItems: Put the plan (`attribute_not_exists(alert_id) OR expires_at <= now`) and, per
    /// member, Update to `AGGREGATED` under `state = IN_PROGRESS AND claim_token = :token`. A cancelled
    /// transaction (a condition failed) writes nothing and is `Stale`.
    async fn aggregate(&self, plan: &LedgerEntry, members: &[(String, u64)], now_ms: i64) -> Result<(), PortError> {
        self.seal(plan, members, now_ms).await
    }

    /// Query on the `watched` index (`watch_shard = "1" AND alert_id > :after`, ascending, Limit
    /// `min(limit, MAX_WATCH_PAGE)`), expired and non-`QUEUED` entries left out.
    ///
    /// Eventually consistent: a global secondary index cannot be read consistently, so a watch entry
    /// just accepted may show up only on a later call (the next sync), and one just completed by
    /// `observe` may still be listed briefly (its compare-and-set then refuses a stale write).
    async fn watched(&self, after: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, PortError> {
        self.query_watched(after, limit).await
    }

    /// Conditional UpdateItem: `attribute_exists(alert_id) AND expires_at > now AND plan = :expected`
    /// (`attribute_not_exists(plan)` when `expected` is None), SET plan, updated_at_ms and, with `done`,
    /// `state = COMPLETED` REMOVE watch_shard. A failed condition is `Ok(false)`.
    async fn observe(
        &self,
        key: &str,
        expected: Option<&str>,
        plan: &str,
        done: bool,
        now_ms: i64,
    ) -> Result<bool, PortError> {
        self.observe_plan(key, expected, plan, done, now_ms).await
    }
}
