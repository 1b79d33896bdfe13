//! The verdict of a fault campaign (issue 13), shared by the local one (`relay serve`,
//! crates/relay/tests/fault_campaign.rs) and the Lambda one (crates/relay-e2e/tests/lambda_campaign.rs): which
//! ServiceNow records list which alerts, and whether every accepted alert is in exactly one record that
//! lists it or in the dead-letter queue with a failure notice, with no record key twice. Also what both
//! drivers share: their settings from the environment, the alerts they send and the faults they inject.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;
use servicenow_sim::{Fault, FaultKind, RunningSim};

// --- the driver's settings, alerts and faults ------------------------------------------------------------

/// A campaign's size and seed: `RELAY_CAMPAIGN_SEED` (default: from the clock, printed),
/// `RELAY_CAMPAIGN_SECONDS` (the chaos phase), `RELAY_CAMPAIGN_ALERTS` and `RELAY_CAMPAIGN_DRAIN_SECONDS`
/// (how long the relay may take to settle everything after the chaos; default 120).
#[derive(Debug, Clone, Copy)]
pub struct CampaignSettings {
    pub seed: u64,
    pub chaos: Duration,
    pub alerts: usize,
    pub drain: Duration,
}

impl CampaignSettings {
    /// The settings from the environment, with these defaults for the size of the run.
    pub fn from_env(alerts: usize, chaos: Duration) -> CampaignSettings {
        let clock_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64;
        CampaignSettings {
            seed: env_or("RELAY_CAMPAIGN_SEED", clock_seed),
            chaos: Duration::from_secs(env_or("RELAY_CAMPAIGN_SECONDS", chaos.as_secs())),
            alerts: env_or("RELAY_CAMPAIGN_ALERTS", alerts),
            drain: Duration::from_secs(env_or("RELAY_CAMPAIGN_DRAIN_SECONDS", 120)),
        }
    }

    /// The line a campaign starts with (the seed that reproduces it).
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what}: seed {} (RELAY_CAMPAIGN_SEED={} reproduces the driver's choices), {} alerts over {} s, drain up to {} s",
            self.seed,
            self.seed,
            self.alerts,
            self.chaos.as_secs(),
            self.drain.as_secs()
        )
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

const SEVERITIES: &[&str] = &["critical", "high", "medium", "low"];
const TYPES: &[&str] = &[
    "dlp",
    "behavioral-anomaly",
    "policy-violation",
    "productivity",
    "custom",
];

/// The sample alert of every alert type (file stem) and severity in `events/alerts`, as JSON: critical and
/// high ones go the realtime way, medium and low ones are batched, each sample always for one employee (so
/// aggregates form).
pub fn templates() -> Vec<Value> {
    let dir = crate::lambda::repo().join("events/alerts");
    let mut out = Vec::new();
    for t in TYPES {
        for s in SEVERITIES {
            let path = dir.join(format!("{t}-{s}.json"));
            let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push(serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        }
    }
    out
}

/// The longest late commit a campaign injects. A real instance's transaction quota (60 s) is longer; the
/// relay's settle window after an ambiguous create (75 s) covers both.
pub const MAX_LATE_COMMIT_MS: u64 = 6_000;

/// How many fault classes [`random_fault`] knows (every class of the simulator).
pub const FAULT_CLASSES: usize = 10;

/// A random fault of class `class` (0..FAULT_CLASSES), on a random table and method (or any).
pub fn random_fault(rng: &mut StdRng, class: usize) -> Fault {
    let kind = match class {
        0 => FaultKind::ServerError {
            status: [500, 502, 503][rng.random_range(0..3)],
        },
        1 => FaultKind::RateLimited {
            retry_after_s: rng.random_range(1..=3),
        },
        2 => FaultKind::RevokeTokens,
        3 => FaultKind::Latency {
            ms: rng.random_range(300..=3_000),
        },
        4 => FaultKind::TimeoutAfterWrite,
        5 => FaultKind::MalformedJson,
        6 => FaultKind::TruncatedJson,
        7 => FaultKind::ConnectionReset {
            after_commit: rng.random_bool(0.5),
        },
        8 => FaultKind::TransactionCancelled,
        _ => FaultKind::LateCommit {
            ms: rng.random_range(500..=MAX_LATE_COMMIT_MS),
        },
    };
    let count = match kind {
        FaultKind::Latency { .. } => rng.random_range(3..=15),
        _ => rng.random_range(1..=4),
    };
    let mut fault = Fault::new(kind).times(count);
    // a fault without a table also hits the Batch API request (its items get none)
    if rng.random_bool(0.5) {
        fault =
            fault.on_table(["sn_si_incident", "sn_hr_core_case", "incident", "sn_risk_risk"][rng.random_range(0..4)]);
    }
    match rng.random_range(0..3) {
        0 => fault.on_method("POST"),
        1 => fault.on_method("GET"),
        _ => fault,
    }
}

// --- the verdict ------------------------------------------------------------------------------------------

/// Every table the shipped config routes to (and the ones a rule could send to).
pub const TABLES: &[&str] = &[
    "sn_si_incident",
    "sn_si_task",
    "sn_hr_core_case",
    "incident",
    "sn_compliance_policy_exception",
    "sn_risk_risk",
    "sn_ti_observable",
    "sn_hr_ef_employee_document",
    "problem",
    "task",
    "em_event",
];

/// One ServiceNow record the relay created, with the alerts it lists.
#[derive(Debug, Clone)]
pub struct Listing {
    pub table: String,
    pub sys_id: String,
    pub number: String,
    /// The relay's key on the record (its correlation id).
    pub key: String,
    pub aggregate: bool,
    /// The alerts it lists: its own (or an aggregate's members), and those noted on it (a thread's).
    pub alerts: BTreeSet<String>,
    /// Alerts noted on it more than once (a note applied twice).
    pub noted_twice: Vec<String>,
}

impl Listing {
    fn describe(&self) -> String {
        format!(
            "{} {} ({}, key {}, lists {})",
            self.table,
            self.number,
            self.sys_id,
            self.key,
            self.alerts.iter().cloned().collect::<Vec<_>>().join(",")
        )
    }
}

/// The shipped config (config/relay.yaml) with threads turned on: what the campaigns and the end-to-end
/// thread tests run.
pub fn threaded_config() -> String {
    let shipped = std::fs::read_to_string(crate::lambda::repo().join("config/relay.yaml")).expect("config/relay.yaml");
    let threaded = shipped.replace("threads:\n  enabled: false", "threads:\n  enabled: true");
    assert!(
        threaded.contains("threads:\n  enabled: true"),
        "config/relay.yaml has a threads block"
    );
    threaded
}

/// How many alerts `records` list as work notes on their thread's record (besides each record's own alert
/// and aggregates' members).
pub fn thread_notes(records: &[Listing]) -> usize {
    records
        .iter()
        .filter(|r| !r.aggregate)
        .map(|r| r.alerts.len().saturating_sub(1))
        .sum()
}

/// The relay's key on a record: the correlation id, or the `[relay-key …]` marker in a text field (tables
/// without a correlation id).
pub fn relay_key(record: &Value) -> Option<String> {
    if let Some(c) = record["correlation_id"].as_str().filter(|c| c.starts_with("emon:")) {
        return Some(c.to_string());
    }
    for v in record.as_object()?.values() {
        let Some(text) = v.as_str() else { continue };
        if let Some(at) = text.find("[relay-key ") {
            let rest = &text[at + "[relay-key ".len()..];
            if let Some(end) = rest.find(']') {
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

/// The alert ids `<prefix><number>` named in `text`.
pub fn ids_in(text: &str, prefix: &str, out: &mut BTreeSet<String>) {
    for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if token
            .strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            out.insert(token.to_string());
        }
    }
}

/// Every record of [`TABLES`] the relay created, with the alerts it lists: a single alert's record by its
/// key (`<prefix>:<alert id>`), an aggregate (`…:b:…`) by the alert ids in its fields and in its attached
/// files (the `alerts.txt` member list). Alert ids are `<prefix><number>`.
pub fn listings(sim: &RunningSim, prefix: &str) -> Vec<Listing> {
    let attachments = sim.records("sys_attachment");
    let journal = sim.records("sys_journal_field");
    let mut out = Vec::new();
    for table in TABLES {
        for record in sim.records(table) {
            let Some(key) = relay_key(&record) else { continue };
            let sys_id = record["sys_id"].as_str().unwrap_or_default().to_string();
            let aggregate = key.contains(":b:");
            let mut alerts = BTreeSet::new();
            if aggregate {
                for v in record.as_object().into_iter().flat_map(|o| o.values()) {
                    if let Some(text) = v.as_str() {
                        ids_in(text, prefix, &mut alerts);
                    }
                }
                for a in attachments.iter().filter(|a| a["table_sys_id"] == sys_id.as_str()) {
                    if let Some(bytes) = a["sys_id"].as_str().and_then(|id| sim.attachment_content(id)) {
                        ids_in(&String::from_utf8_lossy(&bytes), prefix, &mut alerts);
                    }
                }
            } else if let Some((_, id)) = key.split_once(':') {
                alerts.insert(id.to_string());
            }
            // a thread's later alerts, as work notes marked with their key
            let mut noted: BTreeMap<String, usize> = BTreeMap::new();
            for entry in journal.iter().filter(|j| j["element_id"] == sys_id.as_str()) {
                let text = entry["value"].as_str().unwrap_or_default();
                for k in relay_pipeline::lifecycle::marked_keys(text) {
                    if let Some((_, id)) = k.split_once(':') {
                        *noted.entry(id.to_string()).or_default() += 1;
                    }
                }
            }
            let noted_twice = noted
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, _)| id.clone())
                .collect();
            alerts.extend(noted.into_keys());
            out.push(Listing {
                table: table.to_string(),
                number: record["number"].as_str().unwrap_or_default().to_string(),
                sys_id,
                key,
                aggregate,
                alerts,
                noted_twice,
            });
        }
    }
    out
}

/// What the relay's ledger says about one alert.
#[derive(Debug, Clone, Default)]
pub struct LedgerView {
    /// The state, as the status API names it.
    pub state: String,
    /// The record it points at, when completed.
    pub sys_id: Option<String>,
    /// Anything worth printing about a lost alert (correlation id, last error).
    pub detail: String,
}

/// What the relay's stores hold at the end of a campaign.
#[derive(Debug, Default)]
pub struct Stores {
    pub ledger: HashMap<String, LedgerView>,
    /// Alert id → the ledger key of the dead-letter message that covers it.
    pub dead_lettered: HashMap<String, String>,
    /// The keys failure notices were sent for.
    pub notified: BTreeSet<String>,
    /// Why each dead-lettered message was given up, a line each (printed with the verdict).
    pub dead_letter_reasons: Vec<String>,
}

impl Stores {
    /// What the stores hold: the ledger entry of each accepted alert, the dead-letter messages' bodies,
    /// and the keys the failure notices name.
    pub async fn collect(
        ledger: &dyn relay_ports::Ledger,
        accepted: &BTreeSet<String>,
        dead_letter_bodies: impl IntoIterator<Item = String>,
        notified: BTreeSet<String>,
    ) -> Stores {
        let mut stores = Stores {
            notified,
            ..Stores::default()
        };
        for body in dead_letter_bodies {
            let Ok(env) = relay_pipeline::Envelope::from_json(&body) else {
                continue;
            };
            for id in env.alert_ids() {
                stores.dead_lettered.insert(id, env.ledger_key());
            }
            if let Some(why) = &env.dead_letter {
                stores.dead_letter_reasons.push(format!(
                    "{} ({} alerts): {} after {} attempts: {}",
                    env.ledger_key(),
                    env.alert_ids().len(),
                    why.error_class,
                    why.attempts,
                    why.error
                ));
            }
        }
        for id in accepted {
            if let Some(e) = ledger.get(id).await.expect("read the ledger") {
                stores.ledger.insert(id.clone(), LedgerView::of(&e));
            }
        }
        stores
    }
}

/// The campaign's outcome.
#[derive(Debug, Default)]
pub struct Verdict {
    pub accepted: usize,
    /// In exactly one record, or dead-lettered with a notice.
    pub passed: usize,
    /// Of the passed: dead-lettered with a notice.
    pub dead_lettered: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    /// Record keys that occur on more than one record.
    pub repeated_keys: Vec<String>,
    /// Alerts in one record whose ledger points elsewhere (or is not completed).
    pub ledger_mismatch: Vec<String>,
    /// Alert ids listed by a record but never accepted (not counted).
    pub unknown: Vec<String>,
    pub records: usize,
    pub aggregates: usize,
}

impl LedgerView {
    /// The view of a ledger entry.
    pub fn of(e: &relay_ports::LedgerEntry) -> LedgerView {
        LedgerView {
            state: e.state.as_str().to_string(),
            sys_id: e.record.as_ref().map(|r| r.sys_id.clone()),
            detail: format!("{} {:?}", e.correlation_id, e.last_error),
        }
    }
}

impl Verdict {
    /// Panic unless the campaign exercised both paths, lost and duplicated nothing, and drained.
    pub fn assert_holds(&self, seed: u64, drained: bool, drain: std::time::Duration) {
        assert!(
            self.accepted > 0 && self.records > self.aggregates && self.aggregates > 0,
            "the campaign exercised both paths"
        );
        assert!(
            self.lost.is_empty() && self.duplicates() == 0,
            "seed {seed}: {} lost, {} duplicated (see the lines above)",
            self.lost.len(),
            self.duplicates()
        );
        assert!(
            drained,
            "seed {seed}: the relay did not drain within {} s",
            drain.as_secs()
        );
    }

    pub fn judge(accepted: &BTreeSet<String>, records: &[Listing], stores: &Stores) -> Verdict {
        let mut by_key: BTreeMap<&str, Vec<&Listing>> = BTreeMap::new();
        let mut by_alert: BTreeMap<&str, Vec<&Listing>> = BTreeMap::new();
        for r in records {
            by_key.entry(&r.key).or_default().push(r);
            for a in &r.alerts {
                by_alert.entry(a).or_default().push(r);
            }
        }
        let mut v = Verdict {
            accepted: accepted.len(),
            records: records.len(),
            aggregates: records.iter().filter(|r| r.aggregate).count(),
            ..Verdict::default()
        };
        let none = LedgerView {
            state: "none".into(),
            ..LedgerView::default()
        };
        for id in accepted {
            let listed = by_alert.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
            let entry = stores.ledger.get(id).unwrap_or(&none);
            match listed {
                [one] => {
                    v.passed += 1;
                    if entry.sys_id.as_deref() != Some(one.sys_id.as_str()) {
                        v.ledger_mismatch.push(format!(
                            "{id}: ledger {} {:?}, listed by {}",
                            entry.state,
                            entry.sys_id,
                            one.describe()
                        ));
                    }
                }
                [] => match stores.dead_lettered.get(id) {
                    Some(key) if stores.notified.contains(key) => {
                        v.passed += 1;
                        v.dead_lettered += 1;
                    }
                    dlq => v.lost.push(format!(
                        "{id}: in no record; ledger {} {:?} {}; {}",
                        entry.state,
                        entry.sys_id,
                        entry.detail,
                        match dlq {
                            Some(key) => format!("dead-lettered under {key} without a notice"),
                            None => "not in the dead-letter queue".into(),
                        }
                    )),
                },
                many => v.duplicated.push(format!(
                    "{id}: in {} records: {}",
                    many.len(),
                    many.iter().map(|r| r.describe()).collect::<Vec<_>>().join(" | ")
                )),
            }
        }
        for r in records {
            for id in &r.noted_twice {
                v.duplicated
                    .push(format!("{id}: noted more than once on {}", r.describe()));
            }
        }
        v.repeated_keys = by_key
            .iter()
            .filter(|(_, rs)| rs.len() > 1)
            .map(|(k, rs)| {
                format!(
                    "{k}: {}",
                    rs.iter().map(|r| r.describe()).collect::<Vec<_>>().join(" | ")
                )
            })
            .collect();
        v.unknown = by_alert
            .keys()
            .filter(|a| !accepted.contains(**a))
            .map(|a| a.to_string())
            .collect();
        v
    }

    /// Alerts duplicated, plus record keys that occur twice.
    pub fn duplicates(&self) -> usize {
        self.duplicated.len() + self.repeated_keys.len()
    }

    /// Every finding, one per line, then `N passed, L lost, D duplicated`.
    pub fn report(&self, seed: u64) -> String {
        let mut out = String::new();
        for l in &self.lost {
            out.push_str(&format!("  LOST {l}\n"));
        }
        for d in &self.duplicated {
            out.push_str(&format!("  DUPLICATED {d}\n"));
        }
        for k in &self.repeated_keys {
            out.push_str(&format!("  RECORD KEY TWICE {k}\n"));
        }
        for m in &self.ledger_mismatch {
            out.push_str(&format!("  LEDGER MISMATCH {m}\n"));
        }
        if !self.unknown.is_empty() {
            out.push_str(&format!(
                "  listed but never answered 202 (not counted): {:?}\n",
                self.unknown
            ));
        }
        out.push_str(&format!(
            "{} passed, {} lost, {} duplicated ({} of the passed dead-lettered with a notice; {} records, {} aggregates; seed {seed})",
            self.passed,
            self.lost.len(),
            self.duplicates(),
            self.dead_lettered,
            self.records,
            self.aggregates,
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_ids_are_read_from_records_and_member_lists() {
        assert_eq!(
            relay_key(&json!({"correlation_id": "emon:fc1-7"})).as_deref(),
            Some("emon:fc1-7")
        );
        assert_eq!(
            relay_key(&json!({"correlation_id": "", "description": "x\n\n[relay-key emon:b:abc]"})).as_deref(),
            Some("emon:b:abc")
        );
        assert_eq!(relay_key(&json!({"description": "a test record"})), None);
        let mut ids = BTreeSet::new();
        ids_in(
            "- 2026 [Low] fc1-7 (risk 3)\n- fc1-70\nfc1-\nfc1-7x fc2-1",
            "fc1-",
            &mut ids,
        );
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["fc1-7", "fc1-70"]);
    }

    #[test]
    fn an_alert_noted_twice_on_its_threads_record_is_a_duplicate() {
        let record = Listing {
            table: "sn_si_incident".into(),
            sys_id: "s1".into(),
            number: String::new(),
            key: "emon:a1".into(),
            aggregate: false,
            alerts: ["a1", "a2"].iter().map(|a| a.to_string()).collect(),
            noted_twice: vec!["a2".into()],
        };
        let accepted: BTreeSet<String> = ["a1", "a2"].iter().map(|a| a.to_string()).collect();
        let v = Verdict::judge(&accepted, &[record], &Stores::default());
        assert_eq!(v.passed, 2, "each is in one record");
        assert_eq!(v.duplicates(), 1, "{:?}", v.duplicated);
    }

    #[test]
    fn the_verdict_counts_lost_duplicated_and_dead_lettered_alerts() {
        let listing = |key: &str, sys_id: &str, alerts: &[&str]| Listing {
            table: "incident".into(),
            sys_id: sys_id.into(),
            number: String::new(),
            key: key.into(),
            aggregate: key.contains(":b:"),
            alerts: alerts.iter().map(|a| a.to_string()).collect(),
            noted_twice: Vec::new(),
        };
        let records = [
            listing("emon:a1", "s1", &["a1"]),
            listing("emon:b:x", "s2", &["a2", "a3"]),
            listing("emon:b:y", "s3", &["a3"]),
            listing("emon:a4", "s4", &["a4"]),
            listing("emon:a4", "s5", &["a4"]),
        ];
        let accepted: BTreeSet<String> = ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        let mut stores = Stores::default();
        stores.ledger.insert(
            "a1".into(),
            LedgerView {
                state: "COMPLETED".into(),
                sys_id: Some("s1".into()),
                ..LedgerView::default()
            },
        );
        stores.dead_lettered.insert("a5".into(), "a5".into());
        stores.notified.insert("a5".into());
        stores.dead_lettered.insert("a6".into(), "a6".into());
        let v = Verdict::judge(&accepted, &records, &stores);
        // a1, a2 (ledger mismatch only), a5 (dead-lettered with a notice)
        assert_eq!((v.passed, v.dead_lettered), (3, 1));
        // a6 dead-lettered without a notice, a7 nowhere
        assert_eq!(v.lost.len(), 2, "{:?}", v.lost);
        // a3 and a4 are each in two records; the key emon:a4 is on two records
        assert_eq!((v.duplicated.len(), v.repeated_keys.len(), v.duplicates()), (2, 1, 3));
        assert_eq!(
            v.ledger_mismatch.len(),
            1,
            "a2's ledger says nothing: {:?}",
            v.ledger_mismatch
        );
        assert!(v.report(9).ends_with("3 passed, 2 lost, 3 duplicated (1 of the passed dead-lettered with a notice; 5 records, 2 aggregates; seed 9)"));
    }
}
