//! What travels on the queues: the routing decision made at ingest (never the raw payload), or a batch
//! aggregate on its way back through the realtime retry path.

use relay_core::batch::PlannedRecord;
use relay_core::{Decision, RecordType};
use serde::{Deserialize, Serialize};

pub const ENVELOPE_VERSION: u8 = 1;

/// One queue message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The message format's version ([`ENVELOPE_VERSION`]); `v` on the wire.
    #[serde(rename = "v")]
    pub version: u8,
    /// When ingest accepted the (first) alert, epoch ms: the retry window counts from here.
    pub received_at_ms: i64,
    pub item: Item,
    /// Set on messages in the dead-letter queue: why delivery gave up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// One alert and its decision.
    Alert {
        decision: Box<Decision>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_id: Option<String>,
    },
    /// A batch record (several alerts) that the flush could not create; delivered like an alert.
    Aggregate { record: Box<PlannedRecord> },
    /// A lifecycle event (update, resolution, dismissal) of an alert already sent.
    Event { plan: Box<crate::lifecycle::EventPlan> },
    /// A signed callback to the monitoring product about a record the relay made or changed.
    Callback {
        callback: Box<crate::callback::CallbackPlan>,
    },
    /// Sync one watched record now: ServiceNow pushed that it changed ([`crate::Ingest::push`]).
    Sync { sync: Box<SyncRequest> },
}

/// A pushed record to read back: its watch entry, and its table's state model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The record's watch entry (`watch:<table>:<sys_id>`).
    pub key: String,
    pub table: String,
    pub record_type: String,
    pub model: crate::sync::StateModel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub error_class: String,
    pub error: String,
    pub failed_at_ms: i64,
    pub attempts: u32,
}

impl Envelope {
    pub fn alert(decision: Decision, webhook_id: Option<String>, received_at_ms: i64) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            received_at_ms,
            item: Item::Alert {
                decision: Box::new(decision),
                webhook_id,
            },
            dead_letter: None,
        }
    }

    pub fn aggregate(record: PlannedRecord, received_at_ms: i64) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            received_at_ms,
            item: Item::Aggregate {
                record: Box::new(record),
            },
            dead_letter: None,
        }
    }

    pub fn event(plan: crate::lifecycle::EventPlan, received_at_ms: i64) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            received_at_ms,
            item: Item::Event { plan: Box::new(plan) },
            dead_letter: None,
        }
    }

    pub fn sync(sync: SyncRequest, received_at_ms: i64) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            received_at_ms,
            item: Item::Sync { sync: Box::new(sync) },
            dead_letter: None,
        }
    }

    pub fn callback(callback: crate::callback::CallbackPlan, received_at_ms: i64) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            received_at_ms,
            item: Item::Callback {
                callback: Box::new(callback),
            },
            dead_letter: None,
        }
    }

    /// Deliver this message as without threads: its thread plan dropped.
    pub fn leave_thread(&mut self) {
        match &mut self.item {
            Item::Alert { decision, .. } => decision.thread = None,
            Item::Aggregate { record } => record.thread = None,
            Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => {}
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("envelopes always serialise")
    }

    pub fn from_json(body: &str) -> Result<Envelope, serde_json::Error> {
        serde_json::from_str(body)
    }

    /// The ledger key this message is delivered under: the alert id, `batch:<correlation id>`, or the
    /// event's `event:<hash>`.
    pub fn ledger_key(&self) -> String {
        match &self.item {
            Item::Alert { decision, .. } => alert_key(&decision.alert_id),
            Item::Aggregate { record } => aggregate_key(&record.correlation_id),
            Item::Event { plan } => plan.key.clone(),
            Item::Callback { callback } => callback.key(),
            Item::Sync { sync } => sync.key.clone(),
        }
    }

    /// Whether this message travels in the critical lane: a critical alert (an aggregate never does).
    pub fn is_critical(&self) -> bool {
        matches!(&self.item, Item::Alert { decision, .. } if decision.severity == relay_core::Severity::Critical)
    }

    pub fn table(&self) -> &str {
        match &self.item {
            Item::Alert { decision, .. } => &decision.table,
            Item::Aggregate { record } => &record.table,
            Item::Event { plan } => &plan.table,
            Item::Callback { callback } => &callback.record.table,
            Item::Sync { sync } => &sync.table,
        }
    }

    pub fn record_type(&self) -> RecordType {
        match &self.item {
            Item::Alert { decision, .. } => decision.record_type,
            Item::Aggregate { record } => record.record_type,
            Item::Event { plan } => RecordType::parse(&plan.record_type).unwrap_or(RecordType::Incident),
            Item::Callback { callback } => RecordType::parse(&callback.record_type).unwrap_or(RecordType::Incident),
            Item::Sync { sync } => RecordType::parse(&sync.record_type).unwrap_or(RecordType::Incident),
        }
    }

    /// The correlation id of the record this message makes; an event's own key (it makes none).
    pub fn correlation_id(&self) -> &str {
        match &self.item {
            Item::Alert { decision, .. } => &decision.correlation_id,
            Item::Aggregate { record } => &record.correlation_id,
            Item::Event { plan } => &plan.key,
            Item::Callback { callback } => &callback.id,
            Item::Sync { sync } => &sync.key,
        }
    }

    /// Which field carries the correlation id on the record's table, and how a found row is compared.
    pub fn dedupe(&self) -> &relay_core::Dedupe {
        match &self.item {
            Item::Alert { decision, .. } => &decision.dedupe,
            Item::Aggregate { record } => &record.dedupe,
            Item::Event { plan } => &plan.dedupe,
            // a callback makes no record: the default key field, never looked up
            Item::Callback { .. } | Item::Sync { .. } => {
                static DEFAULT: std::sync::LazyLock<relay_core::Dedupe> =
                    std::sync::LazyLock::new(relay_core::Dedupe::default);
                &DEFAULT
            }
        }
    }

    /// The record's key as the dedupe lookup asks for it.
    pub fn record_key(&self) -> servicenow_client::RecordKey<'_> {
        record_key(self.dedupe(), self.correlation_id())
    }

    pub fn fields(&self) -> &serde_json::Map<String, serde_json::Value> {
        match &self.item {
            Item::Alert { decision, .. } => &decision.fields,
            Item::Aggregate { record } => &record.fields,
            // an event, or a callback, sends no record fields of its own
            Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => {
                static NONE: std::sync::LazyLock<serde_json::Map<String, serde_json::Value>> =
                    std::sync::LazyLock::new(serde_json::Map::new);
                &NONE
            }
        }
    }

    /// The fields as they go out at `now_ms` (a date that must not be in the past moved on: see
    /// [`relay_core::ValidTo`]).
    pub fn fields_at(&self, now_ms: i64) -> std::borrow::Cow<'_, serde_json::Map<String, serde_json::Value>> {
        let valid_to = match &self.item {
            Item::Alert { decision, .. } => decision.valid_to.as_ref(),
            Item::Aggregate { record } => record.valid_to.as_ref(),
            Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => None,
        };
        relay_core::ValidTo::apply(valid_to, self.fields(), now_ms.div_euclid(1000))
    }

    /// The ledger keys this message settles: for an aggregate each member alert's, then its own key last
    /// (so while any member is not settled, the aggregate itself is not final and its retry finishes the job).
    pub fn covered_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if let Item::Aggregate { record } = &self.item {
            keys.extend(record.alert_ids.iter().map(|id| alert_key(id)));
        }
        keys.push(self.ledger_key());
        keys
    }

    /// Alert ids covered by this message.
    pub fn alert_ids(&self) -> Vec<String> {
        match &self.item {
            Item::Alert { decision, .. } => vec![decision.alert_id.clone()],
            Item::Aggregate { record } => record.alert_ids.clone(),
            Item::Event { plan } => vec![plan.event.alert_id.clone()],
            Item::Callback { .. } | Item::Sync { .. } => Vec::new(),
        }
    }
}

/// `correlation_id` as the lookup on a table with `dedupe` asks for it.
pub fn record_key<'a>(dedupe: &'a relay_core::Dedupe, correlation_id: &'a str) -> servicenow_client::RecordKey<'a> {
    use relay_core::DedupeMatch;
    servicenow_client::RecordKey {
        field: &dedupe.field,
        value: correlation_id,
        expect: match dedupe.matching {
            DedupeMatch::Equals => servicenow_client::Expect::Equals,
            DedupeMatch::Contains => servicenow_client::Expect::Contains(relay_core::Dedupe::marker(correlation_id)),
        },
    }
}

/// What an aggregate's ledger key starts with.
const AGGREGATE_PREFIX: &str = "batch:";
/// What the ledger key of an alert whose id could be mistaken for another key starts with.
const ESCAPED_ALERT_PREFIX: &str = "alert:";

/// Ledger key of a batch aggregate.
pub fn aggregate_key(correlation_id: &str) -> String {
    format!("{AGGREGATE_PREFIX}{correlation_id}")
}

/// Ledger key of one alert: its id, unless the id starts like an aggregate's key (or like an escaped
/// key, or a thread's), then the id behind [`ESCAPED_ALERT_PREFIX`]. Distinct alert ids keep distinct keys,
/// and no alert key is ever an aggregate's or a thread's.
pub fn alert_key(alert_id: &str) -> String {
    if is_escaped(alert_id) {
        format!("{ESCAPED_ALERT_PREFIX}{alert_id}")
    } else {
        alert_id.to_string()
    }
}

/// The alert id behind an alert's ledger key (the inverse of [`alert_key`]).
pub fn alert_id_of_key(key: &str) -> &str {
    match key.strip_prefix(ESCAPED_ALERT_PREFIX) {
        Some(id) if is_escaped(id) => id,
        _ => key,
    }
}

/// Whether an alert id starts like a key that is not an alert's (and so is escaped by [`alert_key`]).
fn is_escaped(alert_id: &str) -> bool {
    [
        AGGREGATE_PREFIX,
        ESCAPED_ALERT_PREFIX,
        relay_core::THREAD_PREFIX,
        crate::lifecycle::EVENT_PREFIX,
        crate::callback::CALLBACK_PREFIX,
    ]
    .iter()
    .any(|p| alert_id.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_keys_never_collide_with_each_other_or_aggregate_keys() {
        let ids = [
            "a-1",
            "batch:emon:b:1",
            "alert:batch:emon:b:1",
            "alert:x",
            "alert:alert:x",
            "x:batch:",
            "thread:incident:ab",
            "alert:thread:x",
            "event:0123",
        ];
        let mut keys: Vec<String> = ids.iter().map(|id| alert_key(id)).collect();
        for (id, key) in ids.iter().zip(&keys) {
            assert_eq!(alert_id_of_key(key), *id);
            assert!(!key.starts_with(AGGREGATE_PREFIX), "{key}");
            assert!(!key.starts_with(relay_core::THREAD_PREFIX), "{key}");
            assert!(!key.starts_with(crate::lifecycle::EVENT_PREFIX), "{key}");
        }
        keys.push(aggregate_key("emon:b:1"));
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{keys:?}");
        assert_eq!(alert_key("a-1"), "a-1", "ordinary ids are their own keys");
    }
}
