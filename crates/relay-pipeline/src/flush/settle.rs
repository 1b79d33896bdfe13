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
        let env = self.envelope_for(record, alerts, false);
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

    /// A record whose alerts' thread has a record (see [`Delivery::has_open_thread`]): not sent in a batch
    /// but put on the realtime queue, where the deliverer notes it on the thread's record (an aggregate as
    /// one note listing its alerts) — or, that record being done, goes on as the thread's closed-record
    /// policy says. An aggregate is sealed first, so its members are delivered with it only; the claim is
    /// released unsent, for the deliverer to take. When the queue is down the batch messages stay: the next
    /// flush hands the record over again (a sealed aggregate is resumed from its ledger entry).
    ///
    /// [`Delivery::has_open_thread`]: crate::Delivery
    pub(super) async fn hand_to_thread(
        &self,
        record: &PlannedRecord,
        alerts: &[Claimed],
        last_start: i64,
        deadline_ms: i64,
    ) -> Settled {
        let d = &self.delivery;
        let members: Vec<&Claimed> = record.members.iter().map(|m| &alerts[*m]).collect();
        let env = self.envelope_for(record, alerts, true);
        let mut s = Settled::default();
        let entry = if members.len() > 1 {
            match self.seal_for(record, alerts, last_start, deadline_ms, false).await {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::warn!(error = %e, "could not seal an aggregate for its thread; its alerts wait for the next flush");
                    self.release(
                        &members,
                        &RetryLater::new("thread", "the aggregate could not be sealed"),
                    )
                    .await;
                    s.report.left += members.len();
                    return s;
                }
            }
        } else {
            members[0].entry.clone()
        };
        let now = d.ports.clock.now_ms();
        let unsent = RetryLater {
            unsent: true,
            ..RetryLater::new(
                "thread",
                "handed to the realtime path, to be noted on its thread's record",
            )
        };
        if let Err(e) = d
            .ports
            .ledger
            .retry_later(&entry.alert_id, entry.claim_token, &unsent, now)
            .await
        {
            tracing::warn!(key = %entry.alert_id, error = %e, "could not release the claim; its lease ends on its own");
        }
        if let Err(e) = d.ports.realtime.send(&env.to_json(), Duration::ZERO).await {
            tracing::error!(error = %e, "realtime queue unavailable; the thread's alerts stay on the batch queue");
            s.report.left += members.len();
            return s;
        }
        s.report.threaded += 1;
        s.delete = true;
        s
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
