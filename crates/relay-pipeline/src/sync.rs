//! The sync: ServiceNow's answer flowing back. Every record the relay opens gets a watch entry in the ledger
//! (`watch:<table>:<sys_id>`, delivery `watch`); the sync pages through the watched records, reads their
//! state back in batched `sys_idIN…` queries (one call per table and 100 records), and when a record's
//! state changed since the last sync — an analyst resolved, reopened or closed it, or the relay's own
//! resolution — records it and queues a `record.state_changed` callback (state, close code, who changed
//! it, disposition). The status API shows the last state seen. A record in one of its table's final states
//! (closed, cancelled) is no longer watched.
//!
//! Exactly once per change: the watch entry is the change's outbox. A sync that finds a change first
//! records it in the entry as pending — the change's ordinal, the state before and after — with a
//! compare-and-set that only one sync can win; then queues the callback built from that stored change (its
//! webhook id: the record and the ordinal); then clears the pending mark. A sync killed between the steps
//! leaves the change pending, and the next sync queues it again from what is stored, under the same id,
//! which the ledger takes once; two syncs at once cannot both record the same ordinal. Runs on a timer
//! locally (`relay serve --sync-interval-seconds`) and after each flush on AWS (the EventBridge-scheduled
//! flush function).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use relay_core::{Config, RecordType};
use relay_ports::{DeliveryState, LedgerEntry, PortError, RecordRef, WATCH_DELIVERY};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Delivery;
use crate::callback::{Change, Subject, plans};
use crate::deliver::text_of;

/// What a watch entry's key starts with.
pub const WATCH_PREFIX: &str = "watch:";

/// Records read back per call (and per ledger page): as many as one `sys_idIN…` query takes.
const PAGE: u32 = servicenow_client::MAX_READ_IDS as u32;

/// The watch entry of a record.
pub fn watch_key(record: &RecordRef) -> String {
    watch_key_of(&record.table, &record.sys_id)
}

/// The watch entry of the record `sys_id` of `table`.
pub fn watch_key_of(table: &str, sys_id: &str) -> String {
    format!("{WATCH_PREFIX}{table}:{sys_id}")
}

/// What the sync last saw of a record: a watch entry's `plan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The record's state value (`1`, `6`, …); None before the first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `open`, `resolved`, `false_positive` (done with the table's false-positive close code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<String>,
    /// Who last updated the record (`sys_updated_by`) when its state changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// When (`sys_updated_on`, the instance's UTC time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_on: Option<String>,
    /// State changes seen (and reported) so far.
    #[serde(default)]
    pub changes: u32,
    /// The alerts the record was opened for.
    #[serde(default)]
    pub alert_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at_ms: Option<i64>,
    /// The state before the last change (what its callback reports as `previous_state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<String>,
    /// The last change is recorded but its callback may not be queued yet (the outbox mark).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

impl Observed {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("always serialises")
    }

    pub fn of(entry: &LedgerEntry) -> Observed {
        entry
            .plan
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default()
    }
}

/// The watch entry of a record just opened for `alert_ids`.
pub fn watch_entry(
    record: &RecordRef,
    record_type: &str,
    rule: &str,
    alert_ids: Vec<String>,
    now_ms: i64,
    retention: Duration,
) -> LedgerEntry {
    let key = watch_key(record);
    LedgerEntry {
        alert_id: key.clone(),
        webhook_id: None,
        state: DeliveryState::Queued,
        attempts: 0,
        first_received_at_ms: now_ms,
        updated_at_ms: now_ms,
        lease_until_ms: None,
        needs_lookup: false,
        claim_token: 0,
        no_create_before_ms: None,
        not_before_ms: None,
        aggregate: None,
        plan: Some(
            Observed {
                alert_ids,
                ..Observed::default()
            }
            .to_json(),
        ),
        rule: rule.into(),
        record_type: record_type.into(),
        table: record.table.clone(),
        severity: String::new(),
        delivery: WATCH_DELIVERY.into(),
        correlation_id: key,
        config_hash: String::new(),
        record: Some(record.clone()),
        last_error_class: None,
        last_error: None,
        expires_at_s: now_ms / 1000 + retention.as_secs() as i64,
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Watched records read back.
    pub records: usize,
    /// ServiceNow read calls made.
    pub reads: usize,
    /// State changes found (and reported).
    pub changes: usize,
    /// Records no longer watched (a final state reached).
    pub finished: usize,
    /// Watched records the instance no longer returns (deleted, or not readable by the integration user).
    pub missing: usize,
    /// Reads or ledger writes that failed (the next sync tries again).
    pub errors: usize,
    /// Why the sync stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The sync over a delivery's ports and ServiceNow target, with the config's record profiles.
pub struct Syncer {
    pub delivery: Arc<Delivery>,
    config: Arc<Config>,
    /// How long one read may take (the ServiceNow client's timeout): no read starts that could end past
    /// the deadline.
    read_allowance_ms: i64,
}

/// What the sync needs of a table's state model (from its record profile): which states are done and
/// final, where the close code is, how a false positive is told. Carried by a pushed record's sync message
/// (the deliverer has no config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateModel {
    pub done_states: Vec<String>,
    pub final_states: Vec<String>,
    /// The field the resolve transition writes its close code to (`close_code`, `resolution_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_state: Option<String>,
    /// The false-positive transition's state and close code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positive_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positive_code: Option<String>,
}

impl StateModel {
    pub fn of(profile: &relay_core::Profile) -> StateModel {
        let l = &profile.lifecycle;
        StateModel {
            done_states: l.done_states.clone(),
            final_states: l.final_states.clone(),
            close_field: l.resolve.as_ref().and_then(|r| r.close_field()).map(str::to_owned),
            resolve_state: l.resolve.as_ref().map(|r| r.state.clone()),
            false_positive_state: l.false_positive.as_ref().map(|t| t.state.clone()),
            false_positive_code: l
                .false_positive
                .as_ref()
                .and_then(|t| t.close_code())
                .map(str::to_owned),
        }
    }

    /// The fields a read-back asks for.
    fn fields(&self) -> Vec<&str> {
        let mut fields = vec!["state", "sys_updated_by", "sys_updated_on"];
        fields.extend(self.close_field.as_deref());
        fields
    }

    fn is_done(&self, state: &str) -> bool {
        self.done_states.iter().any(|s| s == state)
    }

    fn is_final(&self, state: &str) -> bool {
        self.final_states.iter().any(|s| s == state)
    }

    /// `open`, `resolved`, or `false_positive`: done in the false-positive transition's own state (an HR
    /// case cancelled) or with its close code (a security incident closed as "False positive").
    fn disposition(&self, state: &str, close_code: Option<&str>) -> &'static str {
        if !self.is_done(state) {
            return "open";
        }
        let own_state =
            self.false_positive_state.as_deref() == Some(state) && self.resolve_state.as_deref() != Some(state);
        let by_code = self.false_positive_code.is_some() && self.false_positive_code.as_deref() == close_code;
        if own_state || by_code {
            "false_positive"
        } else {
            "resolved"
        }
    }
}

impl Syncer {
    /// The sync over `delivery`, with `config`'s record profiles; `read_timeout` is the ServiceNow client's
    /// timeout for one request.
    pub fn new(delivery: Arc<Delivery>, config: Arc<Config>, read_timeout: Duration) -> Syncer {
        Syncer {
            delivery,
            config,
            read_allowance_ms: i64::try_from(read_timeout.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// One sync over every watched record, ending early at `deadline_ms` (epoch ms: no read starts that could
    /// end after it) or when the instance is closed to calls (its breaker is open, checked before each read).
    pub async fn sync_until(&self, deadline_ms: i64) -> SyncReport {
        let d = &self.delivery;
        let mut report = SyncReport::default();
        if d.closed_until().is_some() {
            report.stopped = Some("the instance is closed to calls (circuit breaker open)".into());
            return report;
        }
        let client = match d.servicenow.client().await {
            Ok(c) => c,
            Err(o) => {
                report.stopped = Some(format!("no ServiceNow client: {}", o.class()));
                return report;
            }
        };
        let mut after: Option<String> = None;
        loop {
            if d.ports.clock.now_ms() >= deadline_ms {
                report.stopped = Some("deadline reached; the next sync goes on".into());
                break;
            }
            let page = match d.ports.ledger.watched(after.as_deref(), PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    report.errors += 1;
                    report.stopped = Some(format!("the ledger is unavailable: {e}"));
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.alert_id.clone());
            let mut by_table: BTreeMap<(&str, &str), Vec<&LedgerEntry>> = BTreeMap::new();
            for e in page.iter().filter(|e| e.record.is_some()) {
                by_table.entry((&e.table, &e.record_type)).or_default().push(e);
            }
            for ((table, record_type), entries) in by_table {
                let rt = RecordType::parse(record_type).unwrap_or(RecordType::Incident);
                let model = StateModel::of(self.config.profile_for(rt, table));
                let fields = model.fields();
                let ids: Vec<&str> = entries
                    .iter()
                    .filter_map(|e| e.record.as_ref().map(|r| r.sys_id.as_str()))
                    .collect();
                // each read must fit before the deadline, and none is made once the instance pushed back
                if d.closed_until().is_some() {
                    report.stopped = Some("the instance is closed to calls (circuit breaker open)".into());
                    return report;
                }
                if d.ports.clock.now_ms() + self.read_allowance_ms >= deadline_ms {
                    report.stopped = Some("deadline reached; the next sync goes on".into());
                    return report;
                }
                report.reads += 1;
                let rows = match client.read_records(table, &ids, &fields).await {
                    Ok(rows) => rows,
                    Err(o) => {
                        d.observe(&o);
                        tracing::warn!(
                            table,
                            error = o.class(),
                            "the sync could not read the records back; the next sync tries again"
                        );
                        report.errors += 1;
                        continue;
                    }
                };
                let by_id: BTreeMap<String, &Map<String, Value>> =
                    rows.iter().map(|r| (text_of(r.get("sys_id")), r)).collect();
                for e in entries {
                    let Some(row) = e.record.as_ref().and_then(|r| by_id.get(&r.sys_id)) else {
                        report.missing += 1;
                        continue;
                    };
                    report.records += 1;
                    match d.observe_one(e, row, &model, false).await {
                        Ok(Seen::Same) => {}
                        Ok(Seen::Changed { finished }) => {
                            report.changes += 1;
                            report.finished += usize::from(finished);
                        }
                        Err(err) => {
                            tracing::warn!(key = %e.alert_id, error = %err, "the sync could not record a change; the next sync finds it again");
                            report.errors += 1;
                        }
                    }
                }
            }
        }
        if report.changes > 0 || report.errors > 0 {
            tracing::info!(?report, "sync");
        }
        report
    }
}

impl Delivery {
    /// Sync one watched record now (a record ServiceNow pushed: [`crate::Ingest::push`]): read it back and
    /// report a change as the periodic sync would, under the same outbox. Ok(true) when its state changed.
    pub async fn sync_record(&self, key: &str, model: &StateModel) -> Result<bool, String> {
        let entry = match self.ports.ledger.get(key).await {
            Ok(Some(e)) if e.delivery == WATCH_DELIVERY && e.state == DeliveryState::Queued => e,
            Ok(_) => return Ok(false),
            Err(e) => return Err(format!("the ledger is unavailable: {e}")),
        };
        let Some(record) = entry.record.clone() else {
            return Ok(false);
        };
        if self.closed_until().is_some() {
            return Err("the instance is closed to calls (circuit breaker open)".into());
        }
        let client = self.servicenow.client().await.map_err(|o| o.to_string())?;
        let rows = client
            .read_records(&record.table, &[&record.sys_id], &model.fields())
            .await
            .map_err(|o| {
                self.observe(&o);
                o.to_string()
            })?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        match self.observe_one(&entry, row, model, true).await {
            Ok(Seen::Changed { .. }) => Ok(true),
            Ok(Seen::Same) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Compare one record's row with what its watch entry last saw. A change is recorded as pending
    /// (compare-and-set: one sync wins it), its callback queued from what was recorded, then the mark
    /// cleared; a change left pending by an earlier sync is queued first.
    /// `pushed`: ServiceNow said the record changed, so a first look reports its state too.
    async fn observe_one(
        &self,
        e: &LedgerEntry,
        row: &Map<String, Value>,
        model: &StateModel,
        pushed: bool,
    ) -> Result<Seen, PortError> {
        let d = self;
        let ledger = &d.ports.ledger;
        let mut known = Observed::of(e);
        let mut plan = e.plan.clone();
        if known.pending {
            // an earlier sync recorded this change and stopped before it was called back
            plan = Some(self.release(e, &known, plan.as_deref(), model).await?);
            known.pending = false;
        }
        let state = text_of(row.get("state"));
        let finished = model.is_final(&state);
        if known.state.as_deref() == Some(state.as_str()) {
            return Ok(Seen::Same);
        }
        let close_code = model
            .close_field
            .as_deref()
            .map(|f| text_of(row.get(f)))
            .filter(|c| !c.is_empty());
        // the first look at a record sets its baseline; only a record already done is a change to report
        let report = known.state.is_some() || model.is_done(&state) || pushed;
        let now = d.ports.clock.now_ms();
        let next = Observed {
            state: Some(state.clone()),
            disposition: Some(model.disposition(&state, close_code.as_deref()).into()),
            close_code,
            changed_by: Some(text_of(row.get("sys_updated_by"))).filter(|s| !s.is_empty()),
            changed_on: Some(text_of(row.get("sys_updated_on"))).filter(|s| !s.is_empty()),
            changes: known.changes + u32::from(report),
            alert_ids: known.alert_ids.clone(),
            synced_at_ms: Some(now),
            previous_state: known.state.clone(),
            pending: report,
        };
        if !report {
            ledger
                .observe(&e.alert_id, plan.as_deref(), &next.to_json(), finished, now)
                .await?;
            return Ok(Seen::Same);
        }
        let recorded = next.to_json();
        if !ledger
            .observe(&e.alert_id, plan.as_deref(), &recorded, false, now)
            .await?
        {
            // another sync recorded a change of this record first: it reports it
            return Ok(Seen::Same);
        }
        self.release(e, &next, Some(&recorded), model).await?;
        Ok(Seen::Changed { finished })
    }

    /// Queue the callback of the pending change `seen` (stored in the entry as `stored`), then clear the
    /// mark — and end the watch when the state is final. Returns the entry's plan after.
    async fn release(
        &self,
        e: &LedgerEntry,
        seen: &Observed,
        stored: Option<&str>,
        model: &StateModel,
    ) -> Result<String, PortError> {
        let d = self;
        let now = d.ports.clock.now_ms();
        if let (Some(callbacks), Some(record)) = (&d.callbacks, &e.record) {
            let change = Change::StateChanged {
                from: seen.previous_state.clone(),
                observed: seen.clone(),
            };
            let subject = Subject {
                record,
                key: &e.alert_id,
                alert_ids: seen.alert_ids.clone(),
                record_type: &e.record_type,
                rule: &e.rule,
            };
            for plan in plans(&subject, &change, now) {
                if callbacks.wants(plan.kind) {
                    d.queue_callback(plan, now).await?;
                }
            }
        }
        let cleared = Observed {
            pending: false,
            ..seen.clone()
        }
        .to_json();
        let finished = seen.state.as_deref().is_some_and(|s| model.is_final(s));
        // another sync may have cleared it (the same callback, the same id): either way it is released
        d.ports
            .ledger
            .observe(&e.alert_id, stored, &cleared, finished, now)
            .await?;
        Ok(cleared)
    }
}

enum Seen {
    Same,
    Changed { finished: bool },
}
