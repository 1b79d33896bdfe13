//! Aggregates sealed in the ledger: sealed just before they are sent, and resumed from their ledger entry
//! when a member's batch message comes back after the flush that sealed them.

use std::time::Duration;

use relay_core::batch::PlannedRecord;
use relay_ports::{DeliveryState, LedgerEntry, ReceivedMessage};

use super::{Claimed, FlushReport, Flusher};
use crate::ingest::new_entry;

impl Flusher {
    /// Seal `record` (several alerts) before it is sent: its ledger entry — held by this flush until the
    /// deadline, no create by a later holder before the settle window after the last moment this flush may
    /// send it, and the queue message that delivers it — and every member moved to `Aggregated`, in one
    /// atomic ledger write. From then on the members are delivered with this record only: a copy of a
    /// member's batch message, or a later flush after this one died, finds them sealed and resumes the
    /// aggregate instead of grouping them again.
    pub(super) async fn seal(
        &self,
        record: &PlannedRecord,
        alerts: &[Claimed],
        last_start: i64,
        deadline_ms: i64,
    ) -> Result<LedgerEntry, relay_ports::PortError> {
        self.seal_for(record, alerts, last_start, deadline_ms, true).await
    }

    /// [`Flusher::seal`]; `sending`: false for an aggregate handed to its thread, which this flush does
    /// not send (no settle window: the deliverer that takes it over may write at once).
    pub(super) async fn seal_for(
        &self,
        record: &PlannedRecord,
        alerts: &[Claimed],
        last_start: i64,
        deadline_ms: i64,
        sending: bool,
    ) -> Result<LedgerEntry, relay_ports::PortError> {
        let d = &self.delivery;
        let env = self.envelope_for(record, alerts, !sending);
        let now = d.ports.clock.now_ms();
        let mut plan = new_entry(&env, None, d.settings.ledger_retention);
        plan.state = DeliveryState::InProgress;
        plan.attempts = 1;
        plan.claim_token = 1;
        plan.updated_at_ms = now;
        plan.lease_until_ms = Some(deadline_ms.max(now));
        // this flush sends it before `last_start`, within one attempt (the lease) of now; an insert may
        // commit up to the settle window after it was sent
        let last_send = last_start.min(now.saturating_add(d.settings.lease.as_millis() as i64));
        plan.no_create_before_ms = sending.then(|| last_send.saturating_add(d.settings.settle.as_millis() as i64));
        plan.plan = Some(env.to_json());
        let members: Vec<(String, u64)> = record
            .members
            .iter()
            .map(|m| (alerts[*m].entry.alert_id.clone(), alerts[*m].entry.claim_token))
            .collect();
        d.ports.ledger.aggregate(&plan, &members, now).await?;
        Ok(plan)
    }

    /// Batch messages of alerts that an earlier flush sealed into an aggregate: once the aggregate is
    /// settled, the member follows it (completed with its record, or failed with its error); until then
    /// the aggregate's persisted message is sent to the realtime queue (a second copy is harmless: the
    /// aggregate's ledger entry decides), so an aggregate whose flush died after sealing it is delivered.
    /// Returns the messages that may be deleted.
    pub(super) async fn resume_sealed(
        &self,
        members: Vec<(ReceivedMessage, LedgerEntry)>,
        report: &mut FlushReport,
    ) -> Vec<ReceivedMessage> {
        let d = &self.delivery;
        let mut by_plan: std::collections::BTreeMap<String, Vec<(ReceivedMessage, LedgerEntry)>> =
            std::collections::BTreeMap::new();
        for (msg, entry) in members {
            let key = entry.aggregate.clone().unwrap_or_default();
            by_plan.entry(key).or_default().push((msg, entry));
        }
        let mut done = Vec::new();
        for (key, members) in by_plan {
            let plan = match d.ports.ledger.get(&key).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    tracing::error!(aggregate = %key, "the aggregate of sealed alerts has no ledger entry; messages kept");
                    report.left += members.len();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(aggregate = %key, error = %e, "ledger unavailable; sealed alerts kept for later");
                    report.left += members.len();
                    continue;
                }
            };
            let now = d.ports.clock.now_ms();
            let settled = match (plan.state, &plan.record, &plan.plan) {
                (DeliveryState::Completed, Some(record), _) => {
                    for (_, m) in &members {
                        if let Err(e) = d.ports.ledger.complete(&m.alert_id, m.claim_token, record, now).await {
                            tracing::warn!(alert_id = %m.alert_id, error = %e, "could not complete a sealed alert");
                        }
                    }
                    true
                }
                (DeliveryState::Failed, _, _) => {
                    let class = plan.last_error_class.as_deref().unwrap_or("permanent");
                    let error = plan.last_error.as_deref().unwrap_or("its aggregate was given up");
                    for (_, m) in &members {
                        if let Err(e) = d.ports.ledger.fail(&m.alert_id, m.claim_token, class, error, now).await {
                            tracing::warn!(alert_id = %m.alert_id, error = %e, "could not fail a sealed alert");
                        }
                    }
                    true
                }
                (_, _, Some(body)) => match d.ports.realtime.send(body, Duration::ZERO).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(aggregate = %key, error = %e, "realtime queue unavailable; sealed alerts kept");
                        false
                    }
                },
                _ => {
                    tracing::error!(aggregate = %key, state = plan.state.as_str(), "the aggregate has no message; sealed alerts kept");
                    false
                }
            };
            if settled {
                report.resumed += members.len();
                done.extend(members.into_iter().map(|(msg, _)| msg));
            } else {
                report.left += members.len();
            }
        }
        done
    }
}
