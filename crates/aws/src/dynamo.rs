//! [`Ledger`] over Amazon DynamoDB: one item per alert id, every state change a conditional write.
//!
//! Item layout (partition key `alert_id` (S); TTL attribute `expires_at`, epoch seconds):
//!
//! | attribute | type | |
//! |---|---|---|
//! | `alert_id` | S | partition key |
//! | `state` | S | `ACCEPTED`, `QUEUED`, `IN_PROGRESS`, `RETRYING`, `COMPLETED`, `FAILED` |
//! | `attempts` | N | incremented atomically by each granted claim (`ADD`) |
//! | `first_received_at_ms`, `updated_at_ms` | N | epoch ms |
//! | `lease_until_ms` | N | only while a claim is held |
//! | `needs_lookup` | BOOL | |
//! | `webhook_id`, `last_error_class`, `last_error` | S | only when set |
//! | `rule`, `record_type`, `table`, `severity`, `delivery`, `correlation_id`, `config_hash` | S | routing |
//! | `record` | M | `{table, sys_id, number?, link}` once completed |
//! | `expires_at` | N | TTL, epoch seconds |
//!
//! DynamoDB's TTL deletes expired items late (up to days), so every read treats an item whose
//! `expires_at` is not in the future as absent, and every state change requires a live item.
//! Expiry is judged against the machine's clock (the `Ledger` methods without a `now` argument must too).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use relay_ports::{Accept, Claim, Clock, DeliveryState, Ledger, LedgerEntry, PortError, RecordRef, SystemClock};

use crate::error::port_error;

/// How often a claim or accept that lost a race re-reads and tries again before giving up.
const RACE_RETRIES: usize = 8;

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
        let entry = from_item(&item).map_err(|what| {
            PortError::Rejected(format!(
                "ledger table {}: item {alert_id} is malformed: {what}",
                self.table
            ))
        })?;
        Ok((entry.expires_at_s > now_s()).then_some(entry))
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
                let entry = from_item(&item).map_err(|bad| {
                    PortError::Rejected(format!(
                        "ledger table {}: item {alert_id} is malformed: {bad}",
                        self.table
                    ))
                })?;
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
        for _ in 0..RACE_RETRIES {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(to_item(entry)))
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

    /// Conditional UpdateItem that sets `IN_PROGRESS` and the lease and `ADD`s 1 to `attempts`
    /// (ReturnValues ALL_NEW). When the condition fails the entry is read and mapped to
    /// `Completed` / `Failed` / `Busy` / `Missing`.
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
                    "SET #state = :in_progress, #lease_until_ms = :lease, #updated_at_ms = :now ADD #attempts :one",
                    &format!(
                        "{LIVE} AND (#state IN (:accepted, :queued, :retrying) \
                         OR (#state = :in_progress AND #lease_until_ms < :now))"
                    ),
                    &[
                        "alert_id",
                        "expires_at",
                        "state",
                        "lease_until_ms",
                        "updated_at_ms",
                        "attempts",
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
                Some(LedgerEntry {
                    state: DeliveryState::InProgress,
                    lease_until_ms: Some(until),
                    ..
                }) if until >= now_ms => {
                    return Ok(Claim::Busy { lease_until_ms: until });
                }
                // The entry changed between the write and the read (claimable again): try again.
                Some(_) => continue,
            }
        }
        Err(PortError::Unavailable(format!(
            "{}: kept racing with concurrent writers",
            self.op("UpdateItem(claim)", alert_id)
        )))
    }

    async fn complete(&self, alert_id: &str, record: &RecordRef, now_ms: i64) -> Result<(), PortError> {
        let done = self
            .update(
                "UpdateItem(complete)",
                alert_id,
                "SET #state = :completed, #record = :record, #updated_at_ms = :now REMOVE #lease_until_ms",
                &format!("{LIVE} AND #state IN (:accepted, :queued, :in_progress, :retrying)"),
                &[
                    "alert_id",
                    "expires_at",
                    "state",
                    "record",
                    "updated_at_ms",
                    "lease_until_ms",
                ],
                vec![
                    (":completed", state(DeliveryState::Completed)),
                    (":accepted", state(DeliveryState::Accepted)),
                    (":queued", state(DeliveryState::Queued)),
                    (":in_progress", state(DeliveryState::InProgress)),
                    (":retrying", state(DeliveryState::Retrying)),
                    (":record", record_value(record)),
                    (":now", n(now_ms)),
                    (":now_s", n(now_s())),
                ],
            )
            .await?;
        if done.is_some() {
            return Ok(());
        }
        // Already final (Completed keeps its first record; Failed stays Failed) — or missing.
        match self.read(alert_id).await? {
            None => Err(PortError::NotFound(format!(
                "ledger table {}: no entry for {alert_id}",
                self.table
            ))),
            Some(_) => Ok(()),
        }
    }

    async fn retry_later(
        &self,
        alert_id: &str,
        error_class: &str,
        error: &str,
        needs_lookup: bool,
        now_ms: i64,
    ) -> Result<(), PortError> {
        let mut update = String::from(
            "SET #state = :retrying, #last_error_class = :class, #last_error = :error, #updated_at_ms = :now",
        );
        let mut attr_names = vec![
            "alert_id",
            "expires_at",
            "state",
            "last_error_class",
            "last_error",
            "updated_at_ms",
            "lease_until_ms",
        ];
        let mut values = vec![
            (":retrying", state(DeliveryState::Retrying)),
            (":accepted", state(DeliveryState::Accepted)),
            (":queued", state(DeliveryState::Queued)),
            (":in_progress", state(DeliveryState::InProgress)),
            (":class", s(error_class)),
            (":error", s(error)),
            (":now", n(now_ms)),
            (":now_s", n(now_s())),
        ];
        if needs_lookup {
            update.push_str(", #needs_lookup = :true");
            attr_names.push("needs_lookup");
            values.push((":true", AttributeValue::Bool(true)));
        }
        update.push_str(" REMOVE #lease_until_ms");
        let done = self
            .update(
                "UpdateItem(retry_later)",
                alert_id,
                &update,
                &format!("{LIVE} AND #state IN (:accepted, :queued, :in_progress, :retrying)"),
                &attr_names,
                values,
            )
            .await?;
        if done.is_some() {
            return Ok(());
        }
        match self.read(alert_id).await? {
            None => Err(PortError::NotFound(format!(
                "ledger table {}: no entry for {alert_id}",
                self.table
            ))),
            Some(_) => Ok(()), // Completed or Failed: left alone.
        }
    }

    async fn fail(&self, alert_id: &str, error_class: &str, error: &str, now_ms: i64) -> Result<(), PortError> {
        let done = self
            .update(
                "UpdateItem(fail)",
                alert_id,
                "SET #state = :failed, #last_error_class = :class, #last_error = :error, #updated_at_ms = :now \
                 REMOVE #lease_until_ms",
                &format!("{LIVE} AND #state <> :completed"),
                &[
                    "alert_id",
                    "expires_at",
                    "state",
                    "last_error_class",
                    "last_error",
                    "updated_at_ms",
                    "lease_until_ms",
                ],
                vec![
                    (":failed", state(DeliveryState::Failed)),
                    (":completed", state(DeliveryState::Completed)),
                    (":class", s(error_class)),
                    (":error", s(error)),
                    (":now", n(now_ms)),
                    (":now_s", n(now_s())),
                ],
            )
            .await?;
        if done.is_some() {
            return Ok(());
        }
        match self.read(alert_id).await? {
            None => Err(PortError::NotFound(format!(
                "ledger table {}: no entry for {alert_id}",
                self.table
            ))),
            Some(_) => Ok(()), // Completed: left alone.
        }
    }

    async fn reopen(&self, alert_id: &str, now_ms: i64) -> Result<bool, PortError> {
        let done = self
            .update(
                "UpdateItem(reopen)",
                alert_id,
                "SET #state = :queued, #attempts = :zero, #first_received_at_ms = :now, #updated_at_ms = :now \
                 REMOVE #lease_until_ms",
                &format!("{LIVE} AND #state = :failed"),
                &[
                    "alert_id",
                    "expires_at",
                    "state",
                    "attempts",
                    "first_received_at_ms",
                    "updated_at_ms",
                    "lease_until_ms",
                ],
                vec![
                    (":queued", state(DeliveryState::Queued)),
                    (":failed", state(DeliveryState::Failed)),
                    (":zero", n(0)),
                    (":now", n(now_ms)),
                    (":now_s", n(now_s())),
                ],
            )
            .await?;
        Ok(done.is_some())
    }

    async fn get(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError> {
        self.read(alert_id).await
    }
}

// ---------------------------------------------------------------------------------------------------------
// Item encoding
// ---------------------------------------------------------------------------------------------------------

fn record_value(r: &RecordRef) -> AttributeValue {
    let mut m = HashMap::from([
        ("table".to_string(), s(&r.table)),
        ("sys_id".to_string(), s(&r.sys_id)),
        ("link".to_string(), s(&r.link)),
    ]);
    if let Some(number) = &r.number {
        m.insert("number".into(), s(number));
    }
    AttributeValue::M(m)
}

fn to_item(e: &LedgerEntry) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("alert_id".to_string(), s(&e.alert_id)),
        ("state".to_string(), state(e.state)),
        ("attempts".to_string(), n(e.attempts)),
        ("first_received_at_ms".to_string(), n(e.first_received_at_ms)),
        ("updated_at_ms".to_string(), n(e.updated_at_ms)),
        ("needs_lookup".to_string(), AttributeValue::Bool(e.needs_lookup)),
        ("rule".to_string(), s(&e.rule)),
        ("record_type".to_string(), s(&e.record_type)),
        ("table".to_string(), s(&e.table)),
        ("severity".to_string(), s(&e.severity)),
        ("delivery".to_string(), s(&e.delivery)),
        ("correlation_id".to_string(), s(&e.correlation_id)),
        ("config_hash".to_string(), s(&e.config_hash)),
        ("expires_at".to_string(), n(e.expires_at_s)),
    ]);
    let optional = [
        ("webhook_id", e.webhook_id.as_ref()),
        ("last_error_class", e.last_error_class.as_ref()),
        ("last_error", e.last_error.as_ref()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            item.insert(name.into(), s(v));
        }
    }
    if let Some(until) = e.lease_until_ms {
        item.insert("lease_until_ms".into(), n(until));
    }
    if let Some(r) = &e.record {
        item.insert("record".into(), record_value(r));
    }
    item
}

type Item = HashMap<String, AttributeValue>;

fn opt_s(item: &Item, name: &str) -> Result<Option<String>, String> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(other) => Err(format!("`{name}` should be a string, is {other:?}")),
    }
}

fn req_s(item: &Item, name: &str) -> Result<String, String> {
    opt_s(item, name)?.ok_or_else(|| format!("`{name}` is missing"))
}

fn opt_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>, String> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("`{name}` is not a valid number: {v}")),
        Some(other) => Err(format!("`{name}` should be a number, is {other:?}")),
    }
}

fn req_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, String> {
    opt_n(item, name)?.ok_or_else(|| format!("`{name}` is missing"))
}

fn from_item(item: &Item) -> Result<LedgerEntry, String> {
    let state_name = req_s(item, "state")?;
    let state = DeliveryState::parse(&state_name).ok_or_else(|| format!("unknown state {state_name:?}"))?;
    let needs_lookup = match item.get("needs_lookup") {
        None => false,
        Some(AttributeValue::Bool(b)) => *b,
        Some(other) => return Err(format!("`needs_lookup` should be a boolean, is {other:?}")),
    };
    let record = match item.get("record") {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::M(m)) => Some(RecordRef {
            table: req_s(m, "table").map_err(|e| format!("record: {e}"))?,
            sys_id: req_s(m, "sys_id").map_err(|e| format!("record: {e}"))?,
            number: opt_s(m, "number").map_err(|e| format!("record: {e}"))?,
            link: req_s(m, "link").map_err(|e| format!("record: {e}"))?,
        }),
        Some(other) => return Err(format!("`record` should be a map, is {other:?}")),
    };
    Ok(LedgerEntry {
        alert_id: req_s(item, "alert_id")?,
        webhook_id: opt_s(item, "webhook_id")?,
        state,
        attempts: req_n(item, "attempts")?,
        first_received_at_ms: req_n(item, "first_received_at_ms")?,
        updated_at_ms: req_n(item, "updated_at_ms")?,
        lease_until_ms: opt_n(item, "lease_until_ms")?,
        needs_lookup,
        rule: req_s(item, "rule")?,
        record_type: req_s(item, "record_type")?,
        table: req_s(item, "table")?,
        severity: req_s(item, "severity")?,
        delivery: req_s(item, "delivery")?,
        correlation_id: req_s(item, "correlation_id")?,
        config_hash: req_s(item, "config_hash")?,
        record,
        last_error_class: opt_s(item, "last_error_class")?,
        last_error: opt_s(item, "last_error")?,
        expires_at_s: req_n(item, "expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LedgerEntry {
        relay_ports::LedgerEntry {
            alert_id: "a-1".into(),
            webhook_id: Some("msg_1".into()),
            state: DeliveryState::Retrying,
            attempts: 4,
            first_received_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_100_000,
            lease_until_ms: Some(1_700_000_160_000),
            needs_lookup: true,
            rule: "r".into(),
            record_type: "incident".into(),
            table: "incident".into(),
            severity: "high".into(),
            delivery: "realtime".into(),
            correlation_id: "relay:a-1".into(),
            config_hash: "h".into(),
            record: Some(RecordRef {
                table: "incident".into(),
                sys_id: "s".into(),
                number: None,
                link: "l".into(),
            }),
            last_error_class: Some("retryable".into()),
            last_error: Some("503".into()),
            expires_at_s: 1_700_600_000,
        }
    }

    #[test]
    fn items_round_trip() {
        let e = entry();
        assert_eq!(from_item(&to_item(&e)).unwrap(), e);
        let bare = LedgerEntry {
            webhook_id: None,
            lease_until_ms: None,
            record: None,
            last_error: None,
            ..entry()
        };
        assert_eq!(from_item(&to_item(&bare)).unwrap(), bare);
    }

    #[test]
    fn malformed_items_name_the_problem() {
        let mut item = to_item(&entry());
        item.insert("state".into(), s("DONE"));
        assert!(from_item(&item).unwrap_err().contains("DONE"));
        let mut item = to_item(&entry());
        item.insert("attempts".into(), s("four"));
        assert!(from_item(&item).unwrap_err().contains("attempts"));
        let mut item = to_item(&entry());
        item.remove("correlation_id");
        assert!(from_item(&item).unwrap_err().contains("correlation_id"));
    }
}
