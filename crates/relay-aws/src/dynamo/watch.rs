//! The watch entries ([`Ledger::watched`], [`Ledger::observe`]): listed through the sparse global secondary
//! index `watched` (hash key `watch_shard`, always `"1"`, range key `alert_id`, projection ALL), which holds
//! only the items that carry `watch_shard`: the watch entries `accept` wrote `Queued`, until an `observe`
//! with `done` removes the attribute.
//!
//! [`Ledger::watched`]: relay_ports::Ledger::watched
//! [`Ledger::observe`]: relay_ports::Ledger::observe

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use relay_ports::{DeliveryState, LedgerEntry, MAX_WATCH_PAGE, PortError, WATCH_DELIVERY};

use super::DynamoLedger;
use super::expression::{LIVE, n, names, now_s, s, state};
use super::item::{WATCH_SHARD, WATCH_SHARD_VALUE, WATCHED_INDEX, from_item};
use crate::error::port_error;

impl DynamoLedger {
    /// The body of [`Ledger::watched`]: Query the index on `watch_shard = "1" AND alert_id > :after`,
    /// ascending, `Limit = min(limit, MAX_WATCH_PAGE)`, keeping the live `QUEUED` watch entries (the filter
    /// runs after the limit, so a page may come back short). A page left empty by the filter while the
    /// index has more is not returned (the caller would stop): the query goes on from where it stopped.
    ///
    /// [`Ledger::watched`]: relay_ports::Ledger::watched
    pub(super) async fn query_watched(&self, after: Option<&str>, limit: u32) -> Result<Vec<LedgerEntry>, PortError> {
        let limit = limit.min(MAX_WATCH_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_s();
        let mut key_condition = String::from("#watch_shard = :shard");
        let mut attr_names = vec![WATCH_SHARD, "state", "delivery", "expires_at"];
        let mut values: HashMap<String, AttributeValue> = [
            (":shard", s(WATCH_SHARD_VALUE)),
            (":queued", state(DeliveryState::Queued)),
            (":watch", s(WATCH_DELIVERY)),
            (":now_s", n(now)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(after) = after {
            key_condition.push_str(" AND #alert_id > :after");
            attr_names.push("alert_id");
            values.insert(":after".into(), s(after));
        }
        let op = || {
            format!(
                "DynamoDB Query on {} index {WATCHED_INDEX} after {}",
                self.table,
                after.unwrap_or("the first key")
            )
        };
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(WATCHED_INDEX)
                .key_condition_expression(&key_condition)
                .filter_expression("#state = :queued AND #delivery = :watch AND #expires_at > :now_s")
                .set_expression_attribute_names(names(&attr_names))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(true)
                .limit(limit as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| port_error(&op(), e))?;
            let mut entries = Vec::new();
            for item in out.items.unwrap_or_default() {
                let key = match item.get("alert_id") {
                    Some(AttributeValue::S(k)) => k.clone(),
                    _ => String::from("(no alert_id)"),
                };
                let entry = from_item(item).map_err(|e| self.malformed(&key, e))?;
                // the filter expression already did this; kept so the answer holds whatever the index serves
                if entry.delivery == WATCH_DELIVERY && entry.state == DeliveryState::Queued && entry.expires_at_s > now
                {
                    entries.push(entry);
                }
            }
            match out.last_evaluated_key {
                Some(key) if entries.is_empty() => start = Some(key),
                _ => return Ok(entries),
            }
        }
    }

    /// The body of [`Ledger::observe`]: one conditional UpdateItem, `LIVE AND plan = :expected` (or
    /// `attribute_not_exists(plan)`: an unset plan is left out of the item), SET plan and `updated_at_ms`;
    /// with `done` also `state = COMPLETED` and REMOVE `watch_shard`, so the entry leaves the index.
    ///
    /// [`Ledger::observe`]: relay_ports::Ledger::observe
    pub(super) async fn observe_plan(
        &self,
        key: &str,
        expected: Option<&str>,
        plan: &str,
        done: bool,
        now_ms: i64,
    ) -> Result<bool, PortError> {
        let mut update = String::from("SET #plan = :plan, #updated_at_ms = :now");
        let mut attr_names = vec!["alert_id", "expires_at", "plan", "updated_at_ms"];
        let mut values = vec![(":plan", s(plan)), (":now", n(now_ms)), (":now_s", n(now_s()))];
        let condition = match expected {
            Some(expected) => {
                values.push((":expected", s(expected)));
                format!("{LIVE} AND #plan = :expected")
            }
            // a NULL plan (never written by this adapter) reads as unset too
            None => {
                values.push((":null", s("NULL")));
                format!("{LIVE} AND (attribute_not_exists(#plan) OR attribute_type(#plan, :null))")
            }
        };
        if done {
            update.push_str(", #state = :completed REMOVE #watch_shard");
            attr_names.extend(["state", WATCH_SHARD]);
            values.push((":completed", state(DeliveryState::Completed)));
        }
        let written = self
            .update("UpdateItem(observe)", key, &update, &condition, &attr_names, values)
            .await?;
        Ok(written.is_some())
    }
}

impl DynamoLedger {
    /// Every live entry whose `delivery` is one of `deliveries` (a paginated Scan with a filter): what
    /// `relay report rules --ledger-table` counts (alerts and lifecycle events). A Scan reads the whole
    /// table, so it is for an operator's occasional report, not for anything scheduled.
    pub async fn entries_delivered_as(&self, deliveries: &[&str]) -> Result<Vec<LedgerEntry>, PortError> {
        let mut values: HashMap<String, AttributeValue> = HashMap::from([(":now_s".to_string(), n(now_s()))]);
        let mut wanted = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            let k = format!(":d{i}");
            values.insert(k.clone(), s(*d));
            wanted.push(k);
        }
        let filter = format!("#delivery IN ({}) AND #expires_at > :now_s", wanted.join(", "));
        let op = || format!("DynamoDB Scan of {}", self.table);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(&filter)
                .set_expression_attribute_names(names(&["delivery", "expires_at"]))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| port_error(&op(), e))?;
            for item in page.items.unwrap_or_default() {
                let key = match item.get("alert_id") {
                    Some(AttributeValue::S(k)) => k.clone(),
                    _ => String::from("(no alert_id)"),
                };
                out.push(from_item(item).map_err(|e| self.malformed(&key, e))?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}
