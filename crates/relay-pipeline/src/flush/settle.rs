//! Settling a record the flush planned: its outcome stored for each member alert, a failure handed to the
//! realtime queue's retry path (or dead-lettered), the alerts of a record not sent released for the next
//! flush.

use std::time::Duration;

use relay_core::batch::PlannedRecord;
use relay_ports::{LedgerEntry, RetryLater};
use servicenow_client::Outcome;

use super::{Claimed, FlushReport, Flusher};
use crate::deliver::AfterFailure;
use crate::envelope::Envelope;

/// What settling one record did: its counts, and whether its members' batch messages may be deleted.
#[derive(Default)]
pub(super) struct Settled {
    pub(super) report: FlushReport,
    pub(super) delete: bool,
}

/// The error class of alerts released because the flush reached its deadline before sending their record.
const DEFERRED: &str = "deferred";

impl Flusher {
    /// Store the outcome of one record for each member alert; `None` = it was not sent before the deadline.
    /// `plan`: the aggregate's sealed ledger entry (a record of several alerts is sent only once sealed).
    pub(super) async fn settle(
        &self,
        record: &PlannedRecord,
        alerts: &[Claimed],
        plan: Option<&LedgerEntry>,
        outcome: Option<(Outcome, bool)>,
    ) -> Settled {
        let d = &self.delivery;
        let members: Vec<&Claimed> = record.members.iter().map(|m| &alerts[*m]).collect();
        let env = self.envelope_for(record, alerts);
        let mut s = Settled::default();
        let Some((outcome, found)) = outcome else {
            // Release the alerts for the next flush: claimable again, their messages visible again now.
            self.release(
                &members,
                &RetryLater {
                    unsent: true,
                    ..RetryLater::new(DEFERRED, "the flush reached its deadline first")
                },
            )
            .await;
            for m in &members {
                let _ = d.ports.batch.change_visibility(&m.msg.receipt, Duration::ZERO).await;
            }
            s.report.deferred += members.len();
            return s;
        };
        // the ledger entry the record is delivered under: the lone alert's own, or the sealed aggregate's
        let entry = match plan {
            Some(p) => p.clone(),
            None => members[0].entry.clone(),
        };
        match outcome {
            Outcome::Created(rec) => {
                let rec = crate::deliver::record_ref(rec);
                match d.succeeded(&env, &entry, rec, found).await {
                    Ok(()) => {
                        s.report.created += 1;
                        s.delete = true;
                    }
                    Err(e) => {
                        // Leave the messages: they come back, and the next attempt (the lone alert claimed
                        // again, or the aggregate resumed from its sealed entry) looks the record up.
                        d.record_not_stored(&entry, &e).await;
                        s.report.left += members.len();
                    }
                }
                s
            }
            failure => self.retry_via_realtime(members.len(), env, entry, failure).await,
        }
    }

    /// Hand the members back to a later attempt with `retry` (best effort: a member whose write fails is
    /// claimable again once its lease ends).
    async fn release(&self, members: &[&Claimed], retry: &RetryLater) {
        let d = &self.delivery;
        let now = d.ports.clock.now_ms();
        for m in members {
            let _ = d
                .ports
                .ledger
                .retry_later(&m.entry.alert_id, m.entry.claim_token, retry, now)
                .await;
        }
    }

    /// A record could not be created now: schedule it on the realtime queue under `entry` (the lone alert's
    /// own, or the sealed aggregate's), or dead-letter it; then its `members` batch messages may be deleted.
    pub(super) async fn retry_via_realtime(
        &self,
        members: usize,
        env: Envelope,
        entry: LedgerEntry,
        failure: Outcome,
    ) -> Settled {
        let mut s = Settled::default();
        let d = &self.delivery;
        match d.failed(&env, &entry, failure).await {
            AfterFailure::RetryIn(delay) => {
                // a longer wait is in the ledger (`not_before_ms`): the message may come back early
                let delay = delay.min(relay_ports::MAX_SEND_DELAY);
                if let Err(e) = d.ports.realtime.send(&env.to_json(), delay).await {
                    tracing::error!(error = %e, "realtime queue unavailable; alerts stay on the batch queue");
                    s.report.left += members;
                    return s;
                }
                s.report.retried += 1;
                s.delete = true;
            }
            AfterFailure::DeadLettered => {
                s.report.dead_lettered += 1;
                s.delete = true;
            }
        }
        s
    }
}
