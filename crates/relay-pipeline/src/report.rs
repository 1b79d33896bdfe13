//! Rule quality (docs/record-lifecycle.md#rule-quality): from the ledger's alerts and their lifecycle
//! events, per routing rule, how many alerts came, what they became (records, notes on a thread's record,
//! given up), how many were resolved or dismissed as false positives, and how long that took — so a team
//! can tune its rules with data. Pure: the adapters hand it the ledger entries.

use std::collections::BTreeMap;

use relay_ports::{DeliveryState, LedgerEntry};
use serde::Serialize;

use crate::envelope::alert_key;

/// One routing rule's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRow {
    pub rule: String,
    /// Alerts received in the period.
    pub alerts: u64,
    /// Delivered as a record of their own (or a batch record).
    pub records: u64,
    /// Delivered as a work note on their thread's record.
    pub notes: u64,
    /// Given up on (dead-lettered).
    pub failed: u64,
    /// Alerts whose last ending event was `resolved` / `dismissed`.
    pub resolved: u64,
    pub dismissed: u64,
    /// dismissed / (resolved + dismissed); None before any ended.
    pub false_positive_rate: Option<f64>,
    /// Median time from the alert's arrival to its ending event (seconds).
    pub median_seconds_to_resolve: Option<i64>,
}

/// The rows for alerts received from `since_ms` on, one per rule, by rule name.
pub fn rule_report(entries: &[LedgerEntry], since_ms: i64) -> Vec<RuleRow> {
    let by_key: BTreeMap<&str, &LedgerEntry> = entries.iter().map(|e| (e.alert_id.as_str(), e)).collect();
    // each alert's last ending event: (kind, when)
    let mut ended: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.delivery == relay_ports::EVENT_DELIVERY && e.state == DeliveryState::Completed)
    {
        let Some((kind, alert_id)) = e.rule.split_once(' ') else {
            continue;
        };
        if kind != "resolved" && kind != "dismissed" {
            continue;
        }
        let key = alert_key(alert_id);
        let Some((k, _)) = by_key.get_key_value(key.as_str()) else {
            continue;
        };
        let later = ended.get(k).is_none_or(|(_, at)| *at <= e.updated_at_ms);
        if later {
            ended.insert(k, (kind, e.updated_at_ms));
        }
    }
    let mut rows: BTreeMap<&str, (RuleRow, Vec<i64>)> = BTreeMap::new();
    let alerts = entries
        .iter()
        .filter(|e| e.delivery == "realtime" || e.delivery == "batch")
        .filter(|e| e.first_received_at_ms >= since_ms);
    for a in alerts {
        let (row, times) = rows.entry(a.rule.as_str()).or_insert_with(|| {
            (
                RuleRow {
                    rule: a.rule.clone(),
                    alerts: 0,
                    records: 0,
                    notes: 0,
                    failed: 0,
                    resolved: 0,
                    dismissed: 0,
                    false_positive_rate: None,
                    median_seconds_to_resolve: None,
                },
                Vec::new(),
            )
        });
        row.alerts += 1;
        match (&a.state, &a.record) {
            (DeliveryState::Completed, Some(r)) if r.note => row.notes += 1,
            (DeliveryState::Completed, _) => row.records += 1,
            (DeliveryState::Failed, _) => row.failed += 1,
            _ => {}
        }
        if let Some((kind, at)) = ended.get(a.alert_id.as_str()) {
            if *kind == "dismissed" {
                row.dismissed += 1;
            } else {
                row.resolved += 1;
            }
            times.push((at - a.first_received_at_ms).max(0) / 1000);
        }
    }
    rows.into_values()
        .map(|(mut row, mut times)| {
            let ended = row.resolved + row.dismissed;
            row.false_positive_rate = (ended > 0).then(|| row.dismissed as f64 / ended as f64);
            times.sort_unstable();
            row.median_seconds_to_resolve = (!times.is_empty()).then(|| times[times.len() / 2]);
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_ports::RecordRef;

    fn entry(key: &str, rule: &str, delivery: &str, state: DeliveryState, at: i64, note: Option<bool>) -> LedgerEntry {
        LedgerEntry {
            alert_id: key.into(),
            webhook_id: None,
            state,
            attempts: 1,
            first_received_at_ms: at,
            updated_at_ms: at,
            lease_until_ms: None,
            needs_lookup: false,
            claim_token: 1,
            no_create_before_ms: None,
            not_before_ms: None,
            aggregate: None,
            plan: None,
            rule: rule.into(),
            record_type: "security_incident".into(),
            table: "sn_si_incident".into(),
            severity: "high".into(),
            delivery: delivery.into(),
            correlation_id: format!("emon:{key}"),
            config_hash: String::new(),
            record: note.map(|note| RecordRef {
                table: "sn_si_incident".into(),
                sys_id: "s".into(),
                number: None,
                link: String::new(),
                note,
            }),
            last_error_class: None,
            last_error: None,
            expires_at_s: i64::MAX,
        }
    }

    #[test]
    fn each_rule_counts_its_alerts_dispositions_and_time_to_resolve() {
        use DeliveryState::*;
        let entries = vec![
            entry("a-1", "usb", "realtime", Completed, 1_000, Some(false)),
            entry("a-2", "usb", "realtime", Completed, 2_000, Some(true)),
            entry("a-3", "usb", "realtime", Failed, 3_000, None),
            entry("a-4", "usb", "realtime", Retrying, 4_000, None),
            entry("b-1", "browsing", "batch", Completed, 1_000, Some(false)),
            entry("old", "usb", "realtime", Completed, 10, Some(false)),
            // a-1 resolved after 60 s, then dismissed after 120 s: the last one counts
            entry("event:1", "resolved a-1", "event", Completed, 61_000, Some(true)),
            entry("event:2", "dismissed a-1", "event", Completed, 121_000, Some(true)),
            entry("event:3", "resolved a-2", "event", Completed, 32_000, Some(true)),
            // not applied yet, or only an update: not a disposition
            entry("event:4", "dismissed b-1", "event", Retrying, 5_000, None),
            entry("event:5", "updated b-1", "event", Completed, 5_000, Some(true)),
        ];
        let rows = rule_report(&entries, 500);
        assert_eq!(rows.len(), 2);
        let browsing = &rows[0];
        assert_eq!(
            (
                browsing.rule.as_str(),
                browsing.alerts,
                browsing.records,
                browsing.resolved,
                browsing.dismissed
            ),
            ("browsing", 1, 1, 0, 0)
        );
        assert_eq!(browsing.false_positive_rate, None);
        let usb = &rows[1];
        assert_eq!(usb.rule, "usb");
        assert_eq!(
            (usb.alerts, usb.records, usb.notes, usb.failed),
            (4, 1, 1, 1),
            "`old` is before the period"
        );
        assert_eq!((usb.resolved, usb.dismissed), (1, 1));
        assert_eq!(usb.false_positive_rate, Some(0.5));
        // 120 s (a-1) and 30 s (a-2): the upper median
        assert_eq!(usb.median_seconds_to_resolve, Some(120));
    }
}
