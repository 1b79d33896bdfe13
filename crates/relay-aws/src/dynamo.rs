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
//! | `plan` | S | a batch aggregate's own item: the queue message that delivers it (< 256 KiB) |
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

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use relay_ports::{
    Accept, Claim, Clock, DeliveryState, Ledger, LedgerEntry, PortError, RecordRef, RetryLater, SystemClock,
};

use crate::error::port_error;

mod item;
use item::{ItemError, from_item, record_value, to_item};

/// How often a claim or accept that lost a race re-reads and tries again before giving up.
const RACE_RETRIES: usize = 8;

/// How often a seal ([`Ledger::aggregate`]) that failed transiently is sent again (with its request token).
const SEAL_TRIES: u32 = 4;

/// The delivery ledger in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

const LIVE: &str = "attribute_exists(#alert_id) AND #expires_at > :now_s";

/// `#name` → `name` for every attribute an expression references.
fn names(list: &[&str]) -> Option<HashMap<String, String>> {
    Some(list.iter().map(|n| (format!("#{n}"), (*n).to_string())).collect())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn state(st: DeliveryState) -> AttributeValue {
    s(st.as_str())
}

fn now_s() -> i64 {
    SystemClock.now_ms().div_euclid(1000)
}

/// The fence of a write after a claim: the item still carries the caller's token. An item never claimed
/// has no `claim_token` attribute, which is token 0.
/// Returns the condition and the value it references (none for token 0).
fn fence(token: u64) -> (&'static str, Option<(&'static str, AttributeValue)>) {
    if token == 0 {
        ("attribute_not_exists(#claim_token)", None)
    } else {
        ("#claim_token = :token", Some((":token", n(token))))
    }
}

fn is_condition_failure<E>(err: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(err, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
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

    fn op(&self, name: &str, alert_id: &str) -> String {
        format!("DynamoDB {name} on {} for {alert_id}", self.table)
    }

    fn malformed(&self, alert_id: &str, e: ItemError) -> PortError {
        PortError::Rejected(format!("ledger table {}: item {alert_id} {e}", self.table))
    }

    /// The current, live entry (consistent read), or `None`.
    async fn read(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("alert_id", s(alert_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(&self.op("GetItem", alert_id), e))?;
        let Some(item) = out.item else { return Ok(None) };
        let entry = from_item(item).map_err(|e| self.malformed(alert_id, e))?;
        Ok((entry.expires_at_s > now_s()).then_some(entry))
    }

    fn missing(&self, alert_id: &str) -> PortError {
        PortError::NotFound(format!("ledger table {}: no entry for {alert_id}", self.table))
    }

    /// After a fenced write was refused: `NotFound`, `Stale`, or `Ok` (the entry is final and the write
    /// would not have changed it).
    async fn after_refused_write(&self, alert_id: &str, token: u64) -> Result<(), PortError> {
        match self.read(alert_id).await? {
            None => Err(self.missing(alert_id)),
            Some(e) if e.claim_token != token => Err(PortError::stale_claim(alert_id, e.claim_token, token)),
            Some(_) => Ok(()),
        }
    }

    /// A conditional UpdateItem; `Ok(None)` when the condition failed, else the new item.
    async fn update(
        &self,
        what: &str,
        alert_id: &str,
        update: &str,
        condition: &str,
        attr_names: &[&str],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Option<LedgerEntry>, PortError> {
        let values: HashMap<String, AttributeValue> = values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("alert_id", s(alert_id))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(names(attr_names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let entry = from_item(item).map_err(|e| self.malformed(alert_id, e))?;
                Ok(Some(entry))
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(port_error(&self.op(what, alert_id), e)),
        }
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
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        relay_ports::transition::check_aggregate_request(plan, members)?;
        let item = to_item(plan).map_err(|e| self.malformed(&plan.alert_id, e))?;
        let built = |e: aws_sdk_dynamodb::error::BuildError| {
            PortError::Rejected(format!("ledger table {}: cannot build the seal: {e}", self.table))
        };
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(#alert_id) OR #expires_at <= :now_s")
                        .set_expression_attribute_names(names(&["alert_id", "expires_at"]))
                        .expression_attribute_values(":now_s", n(now_s()))
                        .build()
                        .map_err(built)?,
                )
                .build(),
        ];
        for (key, token) in members {
            let (fenced, token_value) = fence(*token);
            let mut values: HashMap<String, AttributeValue> = [
                (":aggregated", state(DeliveryState::Aggregated)),
                (":in_progress", state(DeliveryState::InProgress)),
                (":aggregate", s(&plan.alert_id)),
                (":now", n(now_ms)),
                (":one", n(1)),
                (":now_s", n(now_s())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            values.extend(token_value.map(|(k, v)| (k.to_string(), v)));
            writes.push(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.table)
                            .key("alert_id", s(key))
                            .update_expression(
                                "SET #state = :aggregated, #aggregate = :aggregate, #updated_at_ms = :now \
                                 ADD #claim_token :one REMOVE #lease_until_ms",
                            )
                            .condition_expression(format!("{LIVE} AND #state = :in_progress AND {fenced}"))
                            .set_expression_attribute_names(names(&[
                                "alert_id",
                                "expires_at",
                                "state",
                                "aggregate",
                                "updated_at_ms",
                                "claim_token",
                                "lease_until_ms",
                            ]))
                            .set_expression_attribute_values(Some(values))
                            .build()
                            .map_err(built)?,
                    )
                    .build(),
            );
        }
        // The same request token on every try makes a retry idempotent (DynamoDB answers a repeated token
        // within 10 minutes with the first outcome), so a transient failure — a 500, a throttle, a
        // TransactionInProgress — is tried again without risking a second write.
        let token = format!("{:x}", {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&plan.alert_id, plan.updated_at_ms, members).hash(&mut h);
            h.finish()
        });
        let mut last = None;
        for attempt in 0..SEAL_TRIES {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
            }
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes.clone()))
                .client_request_token(&token)
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(se)) if se.err().is_transaction_canceled_exception() => {
                    return Err(PortError::Stale(format!(
                        "aggregate {} not sealed: the plan exists or a member is no longer held ({})",
                        plan.alert_id,
                        se.err()
                    )));
                }
                Err(e) => {
                    let err = port_error(&self.op("TransactWriteItems(aggregate)", &plan.alert_id), e);
                    if !matches!(err, PortError::Unavailable(_)) {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| PortError::Unavailable("TransactWriteItems not sent".into())))
    }
}
