//! Lifecycle events (schema version 2, docs/record-lifecycle.md#lifecycle-events): an update, resolution or
//! dismissal of an alert already sent, as it travels on the queue — what ingest decided from the alert's
//! ledger entry and the record profile of its table — and the markers its work note carries.

use relay_core::alert::{EventKind, LifecycleEvent};
use relay_core::{Dedupe, Profile, Transition};
use relay_ports::LedgerEntry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a lifecycle event's ledger key starts with.
pub const EVENT_PREFIX: &str = "event:";

/// One lifecycle event on its way to its alert's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPlan {
    pub event: LifecycleEvent,
    /// The event's own ledger key ([`event_key`]).
    pub key: String,
    /// The ledger key of the alert it is about.
    pub alert_key: String,
    /// The alert's correlation id: what marks it on the record and in the record's journal.
    pub alert_correlation_id: String,
    /// The correlation-id prefix of the config (to name an aggregate's members).
    pub correlation_prefix: String,
    pub record_type: String,
    pub table: String,
    /// The routing rule of the alert (for the rule-quality counts).
    #[serde(default)]
    pub rule: String,
    /// The journal field of the table (`work_notes`).
    pub journal: String,
    pub done_states: Vec<String>,
    pub resolve: Option<Transition>,
    pub false_positive: Option<Transition>,
    /// Where the record carries the key of the alert that opened it.
    pub dedupe: Dedupe,
}

/// The ledger key of a lifecycle event: one per alert, kind and webhook delivery, so a re-sent webhook is a
/// duplicate and two updates of one alert are two events.
pub fn event_key(alert_key: &str, kind: EventKind, webhook_id: Option<&str>, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [alert_key.as_bytes(), kind.as_str().as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    match webhook_id {
        Some(id) => h.update(id.as_bytes()),
        None => h.update(Sha256::digest(body)),
    }
    format!("{EVENT_PREFIX}{}", &format!("{:x}", h.finalize())[..40])
}

impl EventPlan {
    /// The plan of `event` for the alert of ledger entry `alert` (delivered, or on its way) whose table's
    /// profile is `profile`; None when the table has no journal to note the event on.
    pub fn new(
        event: LifecycleEvent,
        key: String,
        alert: &LedgerEntry,
        profile: &Profile,
        correlation_prefix: &str,
    ) -> Option<EventPlan> {
        let journal = profile.lifecycle.journal.clone()?;
        Some(EventPlan {
            event,
            key,
            alert_key: alert.alert_id.clone(),
            alert_correlation_id: alert.correlation_id.clone(),
            correlation_prefix: correlation_prefix.to_string(),
            record_type: alert.record_type.clone(),
            table: alert.table.clone(),
            rule: alert.rule.clone(),
            journal,
            done_states: profile.lifecycle.done_states.clone(),
            resolve: profile.lifecycle.resolve.clone(),
            false_positive: profile.lifecycle.false_positive.clone(),
            dedupe: profile.dedupe.clone(),
        })
    }

    /// The marker that says an alert ended this way, in the record's journal: `[relay-resolved <id>]`.
    pub fn ended_marker(kind: EventKind, correlation_id: &str) -> String {
        format!("[relay-{} {correlation_id}]", kind.as_str())
    }

    /// The work note: the event's marker (a retry after a lost answer finds it), the alert's disposition
    /// marker when it ends the alert, then what happened.
    pub fn note(&self) -> String {
        let e = &self.event;
        let mut out = Dedupe::marker(&self.key);
        if e.kind.ends_the_alert() {
            out.push(' ');
            out.push_str(&EventPlan::ended_marker(e.kind, &self.alert_correlation_id));
        }
        let what = match e.kind {
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
            EventKind::Dismissed => "dismissed as a false positive",
        };
        out.push_str(&format!("\nAlert {} was {what} in the monitoring product", e.alert_id));
        if let Some(at) = &e.occurred_at {
            out.push_str(&format!(" at {at}"));
        }
        if let Some(reason) = &e.resolution.reason {
            out.push_str(&format!(" (reason: {reason})"));
        }
        out.push('.');
        if let Some(note) = &e.resolution.note {
            out.push_str("\n\n");
            out.push_str(note);
        }
        out
    }
}

/// The markers a journal entry the relay wrote starts with: `[relay-<kind> <key>]` tokens one space apart at
/// the very start of the text. Reading stops at the first other text, so nothing further on — an alert's
/// description, a sender's note, an employee-chosen file name — can pass for a marker.
pub fn leading_markers(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(r) = rest.strip_prefix("[relay-") {
        let Some(end) = r.find(']') else { break };
        let Some((kind, key)) = r[..end].split_once(' ') else {
            break;
        };
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) || !relay_core::is_query_safe(key) {
            break;
        }
        out.push((kind, key));
        rest = &r[end + 1..];
        match rest.strip_prefix(' ') {
            Some(next) if next.starts_with("[relay-") => rest = next,
            _ => break,
        }
    }
    out
}

/// Whether a journal entry starts with the `[relay-key <key>]` marker of `key` ([`leading_markers`]).
pub fn is_marked(text: &str, key: &str) -> bool {
    leading_markers(text).contains(&("key", key))
}

/// The correlation ids of the alerts a journal entry notes (its leading `[relay-key …]` markers), events'
/// own keys and aggregates' (an aggregate's note lists its members' keys after its own) left out.
pub fn marked_keys(text: &str) -> Vec<String> {
    leading_markers(text)
        .into_iter()
        .filter(|(kind, key)| {
            *kind == "key" && !key.starts_with(EVENT_PREFIX) && !relay_core::batch::is_aggregate_key(key)
        })
        .map(|(_, key)| key.to_string())
        .collect()
}

/// The correlation ids a journal entry marks as ended with `kind` ([`EventPlan::ended_marker`]).
pub fn ended_keys(text: &str, kind: EventKind) -> Vec<String> {
    leading_markers(text)
        .into_iter()
        .filter(|(k, _)| *k == kind.as_str())
        .map(|(_, key)| key.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_read_only_where_the_relay_writes_them() {
        let event = "[relay-key event:abc] [relay-resolved emon:a-1]\nAlert a-1 was resolved";
        assert_eq!(ended_keys(event, EventKind::Resolved), vec!["emon:a-1"]);
        assert!(ended_keys(event, EventKind::Dismissed).is_empty());
        assert!(marked_keys(event).is_empty(), "an event's own key is not an alert");
        assert!(is_marked(event, "event:abc"));
        let note = "[relay-key emon:a-2] Another alert of this thread: a-2";
        assert_eq!(marked_keys(note), vec!["emon:a-2"]);
        // text from an alert or a sender, anywhere after the relay's markers, is never a marker
        let forged = "[relay-key emon:a-3] Another alert: [relay-resolved emon:a-1] [relay-key emon:a-9]";
        assert_eq!(marked_keys(forged), vec!["emon:a-3"]);
        assert!(ended_keys(forged, EventKind::Resolved).is_empty());
        assert!(ended_keys("Alert x [relay-resolved emon:a-1]", EventKind::Resolved).is_empty());
        assert!(!is_marked("note: [relay-key emon:a-3]", "emon:a-3"));
        assert!(marked_keys("[relay-key broken").is_empty());
        assert!(marked_keys("[relay-key has space]").is_empty(), "not a correlation id");
        assert!(marked_keys("[relay-KEY emon:a]").is_empty());
    }

    #[test]
    fn an_event_key_is_one_per_alert_kind_and_webhook() {
        let a = event_key("a-1", EventKind::Resolved, Some("wh-1"), b"{}");
        assert!(a.starts_with("event:"));
        assert_eq!(a, event_key("a-1", EventKind::Resolved, Some("wh-1"), b"{...}"));
        assert_ne!(a, event_key("a-1", EventKind::Resolved, Some("wh-2"), b"{}"));
        assert_ne!(a, event_key("a-1", EventKind::Dismissed, Some("wh-1"), b"{}"));
        assert_ne!(a, event_key("a-2", EventKind::Resolved, Some("wh-1"), b"{}"));
    }
}
