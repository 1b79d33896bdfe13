//! The ledger item ↔ [`LedgerEntry`] mapping (the layout table in the parent module), by `serde_dynamo`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use relay_ports::{DeliveryState, LedgerEntry, RecordRef, WATCH_DELIVERY};
use serde::{Deserialize, Serialize};

pub(super) type Item = HashMap<String, AttributeValue>;

/// The sparse global secondary index of the watch entries: hash key [`WATCH_SHARD`], range key `alert_id`.
pub(super) const WATCHED_INDEX: &str = "watched";
/// The index's hash key attribute; carried (always [`WATCH_SHARD_VALUE`]) only by a watch entry while it
/// is watched, so the index holds nothing else.
pub(super) const WATCH_SHARD: &str = "watch_shard";
/// The one value of [`WATCH_SHARD`]: all watch entries in one index partition, in key order.
pub(super) const WATCH_SHARD_VALUE: &str = "1";

/// One ledger item exactly as stored (the layout table in `dynamo.rs`), mapped by `serde_dynamo`.
/// `LedgerEntry` stays the port's type; this struct owns the attribute names and which attributes are
/// left out when unset, so items already in deployed tables keep reading back.
#[derive(Debug, Serialize, Deserialize)]
struct LedgerItem {
    alert_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook_id: Option<String>,
    state: DeliveryState,
    attempts: u32,
    first_received_at_ms: i64,
    updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until_ms: Option<i64>,
    #[serde(default)]
    needs_lookup: bool,
    rule: String,
    record_type: String,
    table: String,
    severity: String,
    delivery: String,
    correlation_id: String,
    config_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<RecordItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// The TTL attribute (epoch seconds).
    expires_at: i64,
    /// The fencing token; absent until the first claim (`ADD` creates it), so absent reads as 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    claim_token: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    no_create_before_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before_ms: Option<i64>,
    /// A member of a batch aggregate: the aggregate's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aggregate: Option<String>,
    /// A batch aggregate's own item: its queue message. A watch entry's: the record's last known state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    /// The key of the sparse `watched` index: `"1"` on a watch entry written `Queued` (it is watched),
    /// absent on every other item. Not a `LedgerEntry` field: written by `accept`, removed by `observe`
    /// with `done`, ignored when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch_shard: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `record` map: `{table, sys_id, number?, link}`.
#[derive(Debug, Serialize, Deserialize)]
struct RecordItem {
    table: String,
    sys_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    number: Option<String>,
    link: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    note: bool,
}

impl From<&RecordRef> for RecordItem {
    fn from(r: &RecordRef) -> Self {
        RecordItem {
            table: r.table.clone(),
            sys_id: r.sys_id.clone(),
            number: r.number.clone(),
            link: r.link.clone(),
            note: r.note,
        }
    }
}

impl From<RecordItem> for RecordRef {
    fn from(r: RecordItem) -> Self {
        RecordRef {
            table: r.table,
            sys_id: r.sys_id,
            number: r.number,
            link: r.link,
            note: r.note,
        }
    }
}

impl From<&LedgerEntry> for LedgerItem {
    fn from(e: &LedgerEntry) -> Self {
        LedgerItem {
            alert_id: e.alert_id.clone(),
            webhook_id: e.webhook_id.clone(),
            state: e.state,
            attempts: e.attempts,
            first_received_at_ms: e.first_received_at_ms,
            updated_at_ms: e.updated_at_ms,
            lease_until_ms: e.lease_until_ms,
            needs_lookup: e.needs_lookup,
            rule: e.rule.clone(),
            record_type: e.record_type.clone(),
            table: e.table.clone(),
            severity: e.severity.clone(),
            delivery: e.delivery.clone(),
            correlation_id: e.correlation_id.clone(),
            config_hash: e.config_hash.clone(),
            record: e.record.as_ref().map(RecordItem::from),
            last_error_class: e.last_error_class.clone(),
            last_error: e.last_error.clone(),
            expires_at: e.expires_at_s,
            claim_token: e.claim_token,
            no_create_before_ms: e.no_create_before_ms,
            not_before_ms: e.not_before_ms,
            aggregate: e.aggregate.clone(),
            plan: e.plan.clone(),
            watch_shard: (e.delivery == WATCH_DELIVERY && e.state == DeliveryState::Queued)
                .then(|| WATCH_SHARD_VALUE.to_string()),
        }
    }
}

impl From<LedgerItem> for LedgerEntry {
    fn from(i: LedgerItem) -> Self {
        LedgerEntry {
            alert_id: i.alert_id,
            webhook_id: i.webhook_id,
            state: i.state,
            attempts: i.attempts,
            first_received_at_ms: i.first_received_at_ms,
            updated_at_ms: i.updated_at_ms,
            lease_until_ms: i.lease_until_ms,
            needs_lookup: i.needs_lookup,
            rule: i.rule,
            record_type: i.record_type,
            table: i.table,
            severity: i.severity,
            delivery: i.delivery,
            correlation_id: i.correlation_id,
            config_hash: i.config_hash,
            record: i.record.map(RecordRef::from),
            last_error_class: i.last_error_class,
            last_error: i.last_error,
            expires_at_s: i.expires_at,
            claim_token: i.claim_token,
            no_create_before_ms: i.no_create_before_ms,
            not_before_ms: i.not_before_ms,
            aggregate: i.aggregate,
            plan: i.plan,
            // watch_shard: index bookkeeping, not part of the entry
        }
    }
}

/// An item or attribute value that does not have the layout above; the message names the attribute.
#[derive(Debug, thiserror::Error)]
pub(super) enum ItemError {
    #[error("cannot be encoded ({what}): {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_dynamo::Error,
    },
    #[error("is malformed: {source}")]
    Decode {
        #[source]
        source: serde_path_to_error::Error<serde_dynamo::Error>,
    },
}

pub(super) fn to_item(e: &LedgerEntry) -> Result<Item, ItemError> {
    serde_dynamo::to_item(LedgerItem::from(e)).map_err(|source| ItemError::Encode {
        what: "ledger item",
        source,
    })
}

pub(super) fn record_value(r: &RecordRef) -> Result<AttributeValue, ItemError> {
    serde_dynamo::to_attribute_value(RecordItem::from(r)).map_err(|source| ItemError::Encode { what: "record", source })
}

/// Decodes through `serde_path_to_error` so a wrong-typed attribute is named (`attempts: Expected num`).
pub(super) fn from_item(item: Item) -> Result<LedgerEntry, ItemError> {
    let value = serde_dynamo::AttributeValue::M(serde_dynamo::Item::from(item).into());
    let item: LedgerItem = serde_path_to_error::deserialize(serde_dynamo::Deserializer::from_attribute_value(value))
        .map_err(|source| ItemError::Decode { source })?;
    Ok(item.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.into())
    }

    fn entry() -> LedgerEntry {
        LedgerEntry {
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
                number: Some("INC0010001".into()),
                link: "l".into(),
                note: false,
            }),
            last_error_class: Some("retryable".into()),
            last_error: Some("503".into()),
            expires_at_s: 1_700_600_000,
            claim_token: 0,
            no_create_before_ms: None,
            not_before_ms: None,
            aggregate: None,
            plan: None,
        }
    }

    /// `entry()` as the hand-written encoder of earlier releases stored it: the layout deployed tables hold.
    fn stored_item() -> Item {
        HashMap::from([
            ("alert_id".to_string(), s("a-1")),
            ("webhook_id".to_string(), s("msg_1")),
            ("state".to_string(), s("RETRYING")),
            ("attempts".to_string(), n("4")),
            ("first_received_at_ms".to_string(), n("1700000000000")),
            ("updated_at_ms".to_string(), n("1700000100000")),
            ("lease_until_ms".to_string(), n("1700000160000")),
            ("needs_lookup".to_string(), AttributeValue::Bool(true)),
            ("rule".to_string(), s("r")),
            ("record_type".to_string(), s("incident")),
            ("table".to_string(), s("incident")),
            ("severity".to_string(), s("high")),
            ("delivery".to_string(), s("realtime")),
            ("correlation_id".to_string(), s("relay:a-1")),
            ("config_hash".to_string(), s("h")),
            (
                "record".to_string(),
                AttributeValue::M(HashMap::from([
                    ("table".to_string(), s("incident")),
                    ("sys_id".to_string(), s("s")),
                    ("number".to_string(), s("INC0010001")),
                    ("link".to_string(), s("l")),
                ])),
            ),
            ("last_error_class".to_string(), s("retryable")),
            ("last_error".to_string(), s("503")),
            ("expires_at".to_string(), n("1700600000")),
        ])
    }

    /// The same entry with every optional attribute unset: those attributes were left out of the item.
    fn bare_entry() -> LedgerEntry {
        LedgerEntry {
            webhook_id: None,
            state: DeliveryState::Accepted,
            attempts: 0,
            lease_until_ms: None,
            needs_lookup: false,
            record: None,
            last_error_class: None,
            last_error: None,
            ..entry()
        }
    }

    fn bare_stored_item() -> Item {
        let mut item = stored_item();
        for gone in [
            "webhook_id",
            "lease_until_ms",
            "record",
            "last_error_class",
            "last_error",
        ] {
            item.remove(gone);
        }
        item.insert("state".into(), s("ACCEPTED"));
        item.insert("attempts".into(), n("0"));
        item.insert("needs_lookup".into(), AttributeValue::Bool(false));
        item
    }

    #[test]
    fn items_written_by_earlier_releases_read_back() {
        assert_eq!(from_item(stored_item()).unwrap(), entry());
        assert_eq!(from_item(bare_stored_item()).unwrap(), bare_entry());
    }

    #[test]
    fn the_claim_fields_round_trip_and_are_absent_when_unset() {
        let e = LedgerEntry {
            claim_token: 7,
            no_create_before_ms: Some(1_700_000_190_000),
            not_before_ms: Some(1_700_003_600_000),
            aggregate: Some("batch:emon:b:0123".into()),
            plan: Some("{\"v\":1}".into()),
            ..entry()
        };
        let item = to_item(&e).unwrap();
        assert_eq!(item["aggregate"], AttributeValue::S("batch:emon:b:0123".into()));
        assert_eq!(item["plan"], AttributeValue::S("{\"v\":1}".into()));
        assert_eq!(item["claim_token"], n("7"));
        assert_eq!(item["no_create_before_ms"], n("1700000190000"));
        assert_eq!(item["not_before_ms"], n("1700003600000"));
        assert_eq!(from_item(item).unwrap(), e);
        let plain = to_item(&entry()).unwrap();
        for absent in [
            "claim_token",
            "no_create_before_ms",
            "not_before_ms",
            "aggregate",
            "plan",
        ] {
            assert!(!plain.contains_key(absent), "{absent} must be absent when unset");
        }
    }

    #[test]
    fn only_a_queued_watch_entry_carries_the_watch_shard() {
        let watch = LedgerEntry {
            state: DeliveryState::Queued,
            delivery: WATCH_DELIVERY.into(),
            plan: Some("{\"state\":\"1\"}".into()),
            ..entry()
        };
        let item = to_item(&watch).unwrap();
        assert_eq!(item[WATCH_SHARD], s(WATCH_SHARD_VALUE));
        assert_eq!(from_item(item).unwrap(), watch, "the shard is not part of the entry");
        let others = [
            LedgerEntry {
                state: DeliveryState::Completed,
                ..watch.clone()
            },
            LedgerEntry {
                delivery: "realtime".into(),
                ..watch.clone()
            },
            entry(),
            bare_entry(),
        ];
        for other in others {
            assert!(!to_item(&other).unwrap().contains_key(WATCH_SHARD), "{other:?}");
        }
    }

    #[test]
    fn new_items_keep_the_stored_layout() {
        // Same attribute names, same types, unset options absent (not NULL).
        assert_eq!(to_item(&entry()).unwrap(), stored_item());
        assert_eq!(to_item(&bare_entry()).unwrap(), bare_stored_item());
        let mut no_number = entry();
        no_number.record.as_mut().unwrap().number = None;
        let AttributeValue::M(record) = &to_item(&no_number).unwrap()["record"] else {
            panic!("record is not a map")
        };
        assert!(!record.contains_key("number"), "{record:?}");
    }

    #[test]
    fn the_record_value_of_complete_is_the_stored_record_map() {
        assert_eq!(
            record_value(entry().record.as_ref().unwrap()).unwrap(),
            stored_item()["record"]
        );
    }

    #[test]
    fn null_or_absent_optional_attributes_read_as_unset() {
        let mut item = stored_item();
        for unset in [
            "webhook_id",
            "lease_until_ms",
            "record",
            "last_error_class",
            "last_error",
        ] {
            item.insert(unset.into(), AttributeValue::Null(true));
        }
        item.remove("needs_lookup");
        let e = from_item(item).unwrap();
        assert_eq!(
            (
                e.webhook_id,
                e.lease_until_ms,
                e.record,
                e.last_error_class,
                e.last_error,
                e.needs_lookup
            ),
            (None, None, None, None, None, false)
        );
    }

    #[test]
    fn malformed_items_name_the_problem() {
        let cases: [(&str, Option<AttributeValue>, &[&str]); 6] = [
            ("state", Some(s("DONE")), &["DONE"]),
            ("attempts", Some(s("four")), &["attempts"]),
            ("attempts", Some(n("-1")), &["attempts", "-1"]),
            ("needs_lookup", Some(s("yes")), &["needs_lookup"]),
            ("record", Some(s("INC1")), &["record"]),
            ("correlation_id", None, &["correlation_id"]),
        ];
        for (name, value, expected) in cases {
            let mut item = stored_item();
            match value {
                Some(v) => item.insert(name.into(), v),
                None => item.remove(name),
            };
            let msg = from_item(item).unwrap_err().to_string();
            for part in expected {
                assert!(msg.contains(part), "{name}: {msg:?} should name {part:?}");
            }
        }
        let mut item = stored_item();
        let Some(AttributeValue::M(record)) = item.get_mut("record") else {
            panic!("record is not a map")
        };
        record.remove("sys_id");
        let msg = from_item(item).unwrap_err().to_string();
        assert!(msg.contains("record") && msg.contains("sys_id"), "{msg}");
    }
}
