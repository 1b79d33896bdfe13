//! Delivering a lifecycle event (docs/record-lifecycle.md#lifecycle-events): once its alert's record exists,
//! a work note on it; for a resolution or a dismissal, when every alert the record covers has ended, the
//! record walks to its table's resolved state (or closes as a false positive when every alert was
//! dismissed), with the close fields its state model requires.
//!
//! Exactly once: the note carries the event's marker, looked for in the journal after a lost answer (and not
//! written while an earlier ambiguous write may still commit); the state walk starts from the state read
//! back, so a retry continues where a lost answer left it and a record already done is left alone.

use std::collections::BTreeSet;

use relay_core::DedupeMatch;
use relay_core::alert::EventKind;
use relay_ports::{DeliveryState, RecordRef};
use servicenow_client::{Outcome, ServiceNowClient};

use super::claim::Held;
use super::{Delivery, text_of};
use crate::callback::Resolved;
use crate::envelope::{Envelope, Item};
use crate::lifecycle::{EventPlan, ended_keys, is_marked, marked_keys};

/// What the reason of an event's retry starts with while its alert's record is not there yet (the alert, or
/// its batch aggregate, is being delivered): such an event looks again soon for its first attempts
/// ([`crate::defaults::EVENT_WAIT_POLL`]).
pub(crate) const AWAITING_ALERT: &str = "waiting for its alert: ";

/// Whether a failed attempt is an event waiting for its alert's record.
pub(crate) fn awaits_alert(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Retryable { reason, .. } if reason.starts_with(AWAITING_ALERT))
}

fn retry(reason: impl Into<String>) -> Outcome {
    Outcome::Retryable {
        retry_after: None,
        reason: reason.into(),
    }
}

impl Delivery {
    /// One attempt of a lifecycle event under its claim. Returns the outcome (Created: the alert's record)
    /// and whether the record moved to a done state.
    pub(super) async fn apply_event(
        &self,
        client: &ServiceNowClient,
        plan: &EventPlan,
        lookup_first: bool,
        held: &Held,
    ) -> (Outcome, Option<Resolved>) {
        let alert = match self.ports.ledger.get(&plan.alert_key).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                // its enqueue may have failed after the event saw it (the sender then sends it again), or
                // its retention ended: wait within the event's own window
                return (
                    retry(format!(
                        "{AWAITING_ALERT}the alert {:?} is not in the ledger (not accepted again yet, or its \
                         retention ended)",
                        plan.event.alert_id
                    )),
                    None,
                );
            }
            Err(e) => return (retry(format!("the alert's ledger entry could not be read: {e}")), None),
        };
        let record = match (&alert.state, &alert.record) {
            (DeliveryState::Completed, Some(r)) => r.clone(),
            (DeliveryState::Failed, _) => {
                return (
                    retry(format!(
                        "its alert {:?} was given up on ({}): the event waits for the alert's replay",
                        plan.event.alert_id,
                        alert.last_error.as_deref().unwrap_or("no error recorded")
                    )),
                    None,
                );
            }
            (state, _) => {
                return (
                    retry(format!(
                        "{AWAITING_ALERT}its alert {:?} has no record yet ({})",
                        plan.event.alert_id,
                        state.as_str()
                    )),
                    None,
                );
            }
        };
        let as_created = || super::created_on(&record);
        let mut written = false;
        if lookup_first {
            // an earlier write (the note or a state) may still commit: nothing is written before it has
            if let Some(wait) = held.still_settling(self.ports.clock.now_ms(), "write") {
                return (wait, None);
            }
            match client.journal(&record.table, &record.sys_id, &plan.journal).await {
                Ok(entries) => written = entries.iter().any(|e| is_marked(&e.value, &plan.key)),
                Err(o) => return (o, None),
            }
        }
        if !written {
            if let Err(o) = held.confirm(self).await {
                return (o, None);
            }
            match client
                .add_journal_entry(&record.table, &record.sys_id, &plan.journal, &plan.note())
                .await
            {
                Ok(()) => {}
                // a record in a final state takes no more notes: nothing is left to change on it
                Err(Outcome::Permanent { message, detail, .. })
                    if self.is_done(client, plan, &record).await == Some(true) =>
                {
                    tracing::info!(event = %plan.key, record = %record.sys_id, error = %message, detail = ?detail,
                        "the alert's record is done and refused the event's note; nothing to change");
                    return (as_created(), None);
                }
                Err(o) => return (o, None),
            }
        }
        if !plan.event.kind.ends_the_alert() {
            return (as_created(), None);
        }
        match self.resolve_if_all_ended(client, plan, &alert, &record, held).await {
            Ok(moved) => (as_created(), moved),
            Err(o) => (o, None),
        }
    }

    /// Whether the record is in one of the plan's done states (None: it could not be read).
    async fn is_done(&self, client: &ServiceNowClient, plan: &EventPlan, record: &RecordRef) -> Option<bool> {
        let state = self.state_of(client, record).await.ok()??;
        Some(plan.done_states.contains(&state))
    }

    /// When every alert `record` covers has ended (resolved or dismissed, by the markers in its journal),
    /// walk it to the resolve state — the false-positive state when every one was dismissed. Some (the state
    /// it reached, the close code written) when this call moved it.
    async fn resolve_if_all_ended(
        &self,
        client: &ServiceNowClient,
        plan: &EventPlan,
        alert: &relay_ports::LedgerEntry,
        record: &RecordRef,
        held: &Held,
    ) -> Result<Option<Resolved>, Outcome> {
        let key_field = plan.dedupe.field.as_str();
        let rows = client
            .read_records(&record.table, &[&record.sys_id], &["state", key_field])
            .await?;
        let Some(row) = rows.first() else {
            tracing::warn!(event = %plan.key, record = %record.sys_id, "the alert's record can no longer be read; left as it is");
            return Ok(None);
        };
        let state = text_of(row.get("state"));
        if plan.done_states.contains(&state) {
            return Ok(None);
        }
        let journal = client.journal(&record.table, &record.sys_id, &plan.journal).await?;
        let readable = journal.iter().any(|e| is_marked(&e.value, &plan.key));
        let me = plan.alert_correlation_id.clone();
        // the alerts the record covers
        let mut covered: BTreeSet<String> = BTreeSet::from([me.clone()]);
        if let Some(aggregate) = &alert.aggregate {
            covered.extend(self.members_of(aggregate, plan).await?);
        }
        // the alert that opened the record (an aggregate's own key names no alert: its members count; the
        // record may be a thread's that the aggregate was noted on); a key kept inside a long text
        // (Contains) is not read back, since text around it comes from the alert
        let key_text = text_of(row.get(key_field));
        if plan.dedupe.matching == DedupeMatch::Equals
            && !key_text.is_empty()
            && !relay_core::batch::is_aggregate_key(&key_text)
        {
            covered.insert(key_text);
        }
        let mut resolved: BTreeSet<String> = BTreeSet::new();
        let mut dismissed: BTreeSet<String> = BTreeSet::new();
        if readable {
            for e in &journal {
                covered.extend(marked_keys(&e.value));
                resolved.extend(ended_keys(&e.value, EventKind::Resolved));
                dismissed.extend(ended_keys(&e.value, EventKind::Dismissed));
            }
        } else {
            tracing::warn!(event = %plan.key, record = %record.sys_id,
                "the record's journal is not readable (audit_viewer): only the alerts known without it count");
        }
        match plan.event.kind {
            EventKind::Dismissed => dismissed.insert(me),
            _ => resolved.insert(me),
        };
        let open: Vec<&String> = covered
            .iter()
            .filter(|k| !resolved.contains(*k) && !dismissed.contains(*k))
            .collect();
        if !open.is_empty() {
            tracing::info!(event = %plan.key, record = %record.sys_id, open = open.len(), "other alerts of the record are still open");
            return Ok(None);
        }
        let all_dismissed = resolved.iter().all(|k| !covered.contains(k));
        let (transition, why) = if all_dismissed {
            (plan.false_positive.as_ref(), "dismissed as false positives")
        } else {
            (plan.resolve.as_ref(), "resolved")
        };
        let Some(transition) = transition else {
            tracing::info!(event = %plan.key, table = %record.table, "the table's profile has no such transition; noted only");
            return Ok(None);
        };
        let notes = format!(
            "All {} alert(s) of this record were {why} in the monitoring product (last: {}). Closed by Alert Relay.",
            covered.len(),
            plan.event.alert_id
        );
        let state = self.walk(client, plan, record, transition, &notes, held).await?;
        Ok(state.map(|state| Resolved {
            state,
            close_code: transition.close_code().map(str::to_owned),
        }))
    }

    /// Take `record` through `transition` one write at a time, reading its state back before each: from a
    /// state outside the transition's `via`, the target directly first (its flow may allow it), then the
    /// `via` states from the first; from a `via` state, the next one. A record done meanwhile (an analyst,
    /// another event) ends the walk; a write refused because the state moved under it is read again.
    async fn walk(
        &self,
        client: &ServiceNowClient,
        plan: &EventPlan,
        record: &RecordRef,
        transition: &relay_core::Transition,
        notes: &str,
        held: &Held,
    ) -> Result<Option<String>, Outcome> {
        let mut direct_refused = false;
        for _ in 0..transition.via.len() + 4 {
            let Some(current) = self.state_of(client, record).await? else {
                return Ok(None);
            };
            if plan.done_states.contains(&current) {
                return Ok(Some(current));
            }
            let direct = !direct_refused && !transition.via.contains(&current);
            let fields = if direct {
                transition.fields_with(notes)
            } else {
                transition.writes_from(&current, notes).swap_remove(0)
            };
            held.confirm(self).await?;
            match client.update_record(&record.table, &record.sys_id, &fields).await {
                Ok(()) => {}
                Err(Outcome::Permanent { .. }) if direct && !transition.via.is_empty() => direct_refused = true,
                Err(refused @ Outcome::Permanent { .. }) => {
                    if self.state_of(client, record).await?.as_deref() == Some(current.as_str()) {
                        return Err(refused);
                    }
                }
                Err(o) => return Err(o),
            }
        }
        Err(retry(
            "the record's state kept changing during the walk to its resolved state",
        ))
    }

    /// The record's current state; None when it can no longer be read.
    async fn state_of(&self, client: &ServiceNowClient, record: &RecordRef) -> Result<Option<String>, Outcome> {
        super::field_of(client, record, "state").await
    }

    /// The correlation ids of the alerts a batch aggregate's record covers (from its sealed plan).
    async fn members_of(&self, aggregate: &str, plan: &EventPlan) -> Result<Vec<String>, Outcome> {
        let entry = self
            .ports
            .ledger
            .get(aggregate)
            .await
            .map_err(|e| retry(format!("the aggregate's ledger entry could not be read: {e}")))?;
        let Some(Ok(env)) = entry.and_then(|e| e.plan).map(|p| Envelope::from_json(&p)) else {
            return Ok(Vec::new());
        };
        Ok(match env.item {
            Item::Aggregate { record } => record
                .alert_ids
                .iter()
                .map(|id| relay_core::correlation_id(&plan.correlation_prefix, id))
                .collect(),
            _ => Vec::new(),
        })
    }
}
