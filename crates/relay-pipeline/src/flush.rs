//! flush: drain the batch queue, aggregate with the core batch planner, send the records through the
//! Batch API, store each result, delete the messages whose records exist, and move every failed or
//! unserviced record onto the realtime queue's retry path. A batch message is deleted only once its record
//! exists, or once it is safely on the realtime queue or in the dead-letter queue.
//!
//! This file holds the flush itself ([`Flusher::flush_until`]: drain, claim, plan, send); `settings` holds
//! [`FlushSettings`], `report` the [`FlushReport`], `seal` the aggregates sealed in the ledger (before they
//! are sent, and resumed after a flush that died), `settle` what each record's outcome does to its alerts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use relay_core::RecordType;
use relay_core::batch::{self, Pending, PlannedRecord};
use relay_ports::{Claim, LedgerEntry, ReceivedMessage};
use servicenow_client::Outcome;

use crate::deliver::Delivery;
use crate::envelope::{Envelope, Item};
use crate::telemetry::{FlushFinished, TelemetryEvent};

mod chunk;
mod report;
mod seal;
mod settings;
mod settle;

pub use report::FlushReport;
pub use settings::FlushSettings;

use settle::Settled;

/// The flush pipeline: drains the batch queue of the delivery's ports.
pub struct Flusher {
    pub delivery: Arc<Delivery>,
    pub settings: FlushSettings,
}

struct Claimed {
    msg: ReceivedMessage,
    env: Envelope,
    entry: LedgerEntry,
}

impl Flusher {
    pub fn new(delivery: Arc<Delivery>, settings: FlushSettings) -> Flusher {
        Flusher { delivery, settings }
    }

    async fn drain(&self, last_start: i64, report: &mut FlushReport) -> Vec<ReceivedMessage> {
        let d = &self.delivery;
        let deadline = (d.ports.clock.now_ms() + self.settings.drain_budget.as_millis() as i64).min(last_start);
        let mut out = Vec::new();
        while out.len() < self.settings.max_messages && d.ports.clock.now_ms() < deadline {
            let want = (self.settings.max_messages - out.len()).min(10) as u32;
            match self
                .delivery
                .ports
                .batch
                .receive(want, self.settings.receive_wait)
                .await
            {
                Ok(msgs) if msgs.is_empty() => break,
                Ok(msgs) => out.extend(msgs),
                Err(e) => {
                    tracing::error!(error = %e, "batch queue receive failed; flushing what was drained");
                    break;
                }
            }
        }
        report.messages = out.len();
        out
    }

    /// Delete batch messages in as few queue calls as the queue allows.
    async fn delete_all(&self, msgs: &[&ReceivedMessage]) {
        if msgs.is_empty() {
            return;
        }
        let receipts: Vec<String> = msgs.iter().map(|m| m.receipt.clone()).collect();
        let results = self.delivery.ports.batch.delete_batch(&receipts).await;
        for (m, r) in msgs.iter().zip(results) {
            if let Err(e) = r {
                // It comes back; its ledger entry is final (or it is on the realtime path under the
                // aggregate's key), so it is dropped as a duplicate then.
                tracing::warn!(message_id = %m.message_id, error = %e, "could not delete a flushed message");
            }
        }
    }

    /// True while ServiceNow calls may start: before `last_start`, and not while the breaker keeps the
    /// instance closed.
    fn open(&self, last_start: i64) -> bool {
        self.delivery.ports.clock.now_ms() < last_start && self.delivery.closed_until().is_none()
    }

    /// Run one flush within the flush budget.
    pub async fn flush(&self) -> FlushReport {
        let deadline = self.delivery.ports.clock.now_ms() + self.settings.budget.as_millis() as i64;
        self.flush_until(deadline).await
    }

    /// Run one flush that ends by `deadline_ms` (epoch ms). No claim, lookup or ServiceNow call starts later
    /// than `settle_reserve` before it; every record that was sent is settled; the alerts of records that
    /// were not sent are released for the next flush (their messages made visible again at once).
    pub async fn flush_until(&self, deadline_ms: i64) -> FlushReport {
        let d = &self.delivery;
        let last_start = deadline_ms - self.settings.settle_reserve.as_millis() as i64;
        let open = || self.open(last_start);
        let mut report = FlushReport::default();
        let drained = self.drain(last_start, &mut report).await;
        if let Some(until) = d.closed_until() {
            // ServiceNow asked to wait (or keeps failing): claim nothing, call nothing; the messages come back
            // once it takes calls again (with jitter, so the next flush does not open with a burst)
            let wait = d.until(until);
            for m in &drained {
                let delay = d.delay_without_attempt(m.receive_count, wait);
                let _ = d.ports.batch.change_visibility(&m.receipt, delay).await;
            }
            tracing::info!(
                messages = drained.len(),
                closed_until_ms = until,
                "ServiceNow closed to calls; the batch waits"
            );
            report.left += drained.len();
            FlushFinished { report: &report }.emit();
            return report;
        }

        // Parse and claim each alert (concurrently; claims are conditional writes).
        let claims: Vec<(ReceivedMessage, Result<Envelope, String>, Option<Claim>)> = futures::stream::iter(drained)
            .map(|msg| async move {
                match Envelope::from_json(&msg.body) {
                    Err(e) => (msg, Err(e.to_string()), None),
                    // past the deadline the message is left: it comes back after its visibility timeout
                    Ok(env) if !open() => (msg, Ok(env), None),
                    Ok(env) => {
                        let claim = d.claim(&env).await.ok();
                        (msg, Ok(env), claim)
                    }
                }
            })
            .buffer_unordered(crate::defaults::FLUSH_SETTLE_CONCURRENCY)
            .collect()
            .await;

        let mut done: Vec<ReceivedMessage> = Vec::new();
        let mut claimed: Vec<Claimed> = Vec::new();
        let mut sealed_members: Vec<(ReceivedMessage, LedgerEntry)> = Vec::new();
        for (msg, env, claim) in claims {
            match (env, claim) {
                (Err(why), _) => {
                    if d.poison(&msg.body, &format!("not an alert envelope: {why}"))
                        .await
                        .is_ok()
                    {
                        done.push(msg);
                    } else {
                        report.left += 1;
                    }
                }
                (Ok(_), Some(Claim::Completed(_) | Claim::Failed(_))) => {
                    report.duplicates += 1;
                    done.push(msg);
                }
                (Ok(env), Some(Claim::Claimed(entry))) => claimed.push(Claimed { msg, env, entry }),
                (Ok(_), Some(Claim::Aggregated(entry))) => sealed_members.push((msg, entry)),
                (Ok(_), _) => report.left += 1,
            }
        }
        done.extend(self.resume_sealed(sealed_members, &mut report).await);

        // Aggregates that reached the batch queue go straight back to the realtime path.
        let (alerts, others): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|c| matches!(c.env.item, Item::Alert { .. }));
        for c in &others {
            let s = self
                .retry_via_realtime(
                    1,
                    c.env.clone(),
                    c.entry.clone(),
                    Outcome::Retryable {
                        retry_after: None,
                        reason: "aggregate on the batch queue".into(),
                    },
                )
                .await;
            report.add(&s.report);
            if s.delete {
                done.push(c.msg.clone());
            }
        }
        report.alerts = alerts.len();
        if alerts.is_empty() {
            self.delete_all(&done.iter().collect::<Vec<_>>()).await;
            FlushFinished { report: &report }.emit();
            return report;
        }

        let decisions: Vec<&relay_core::Decision> = alerts
            .iter()
            .map(|c| match &c.env.item {
                Item::Alert { decision, .. } => decision.as_ref(),
                Item::Aggregate { .. } | Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => {
                    unreachable!("partitioned")
                }
            })
            .collect();
        let pending: Vec<Pending<'_>> = alerts
            .iter()
            .zip(&decisions)
            .map(|(c, decision)| Pending {
                decision,
                received_at_ms: c.env.received_at_ms,
                // an earlier attempt (a flush ended after sending it alone) may have created its record
                alone: crate::deliver::must_look_up(&c.entry, &c.env),
            })
            .collect();
        let mut plan = batch::plan(&pending, &self.settings.batch, self.settings.window.as_millis() as i64);
        report.records = plan.records.len();

        // Records whose alerts' thread has a record: noted on it through the realtime path, not batched.
        let mut threaded: HashSet<usize> = HashSet::new();
        for (i, r) in plan.records.iter().enumerate() {
            if let Some(t) = &r.thread
                && open()
                && d.has_open_thread(t).await
            {
                threaded.insert(i);
            }
        }
        if !threaded.is_empty() {
            for chunk in &mut plan.chunks {
                chunk.retain(|i| !threaded.contains(i));
            }
            plan.chunks.retain(|c| !c.is_empty());
        }

        let mut outcomes: HashMap<usize, (Outcome, bool)> = HashMap::new();

        // Records whose members had an ambiguous attempt: look them up before creating again.
        let client = d.servicenow.client().await;
        let to_look_up: Vec<usize> = plan
            .records
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                // an aggregate's id comes from its whole member set, which is sealed before it is sent: it
                // cannot have been sent before, so only a lone alert's record is looked up (an alert an
                // earlier attempt may have sent is always planned alone: `Pending::alone`)
                r.record_type != RecordType::ItomEvent
                    && !threaded.contains(i)
                    && r.members.len() == 1
                    && r.members
                        .iter()
                        .any(|m| crate::deliver::must_look_up(&alerts[*m].entry, &alerts[*m].env))
            })
            .map(|(i, _)| i)
            .collect();
        // `None`: not looked up before the deadline, so not created either
        #[allow(clippy::type_complexity)]
        let looked_up: Vec<(usize, Option<Option<(Outcome, bool)>>)> = futures::stream::iter(to_look_up)
            .map(|i| {
                let (client, r) = (&client, &plan.records[i]);
                async move {
                    if !open() {
                        return (i, None);
                    }
                    let o = match client {
                        Err(o) => Some((o.clone(), false)),
                        Ok(c) => match c
                            .find_by_key(&r.table, &crate::envelope::record_key(&r.dedupe, &r.correlation_id))
                            .await
                        {
                            // an earlier attempt created it: what it did not upload is uploaded now
                            Ok(Some(found)) => {
                                let files = crate::deliver::Files::of_record(r);
                                match crate::deliver::attach_files(c, &files, &found, true).await {
                                    Ok(()) => Some((Outcome::Created(found), true)),
                                    Err(pending) => Some((pending, false)),
                                }
                            }
                            Ok(None) => None,
                            Err(o) => Some((o, false)),
                        },
                    };
                    (i, Some(o))
                }
            })
            .buffer_unordered(crate::defaults::FLUSH_SETTLE_CONCURRENCY)
            .collect()
            .await;
        let mut skipped: HashSet<usize> = HashSet::new();
        for (i, o) in looked_up {
            match o {
                None => {
                    skipped.insert(i);
                }
                Some(Some(o)) => {
                    outcomes.insert(i, o);
                }
                Some(None) => {}
            }
        }

        // Event Management records, one call each (de-duplicated by message_key on the ServiceNow side).
        for &i in &plan.events {
            if !open() {
                break;
            }
            let env = self.envelope_for(&plan.records[i], &alerts, false);
            let (o, found) = d.create(&env, false).await;
            outcomes.insert(i, (o, found));
        }

        // Table records through the Batch API, several requests at once (`chunk`). An aggregate is sealed in
        // the ledger just before its chunk is sent (its members can then never be delivered apart from it);
        // one that cannot be sealed is not sent.
        let seal_lock = tokio::sync::Mutex::new(());
        let chunks = chunk::Chunks {
            plan: &plan,
            alerts: &alerts,
            client: &client,
            outcomes: &outcomes,
            skipped: &skipped,
            last_start,
            deadline_ms,
            seal_lock: &seal_lock,
        };
        // built first, as the settle futures below, so the flush future stays `Send`
        let sends: Vec<_> = plan.chunks.iter().map(|c| self.send_chunk(c, &chunks)).collect();
        let results: Vec<chunk::ChunkResult> = futures::stream::iter(sends)
            .buffer_unordered(crate::defaults::FLUSH_BATCH_CONCURRENCY)
            .collect()
            .await;
        let mut plans: HashMap<usize, LedgerEntry> = HashMap::new();
        for r in results {
            report.batch_calls += usize::from(r.sent);
            plans.extend(r.sealed);
            skipped.extend(r.skipped);
            outcomes.extend(r.outcomes);
        }

        // Settle every record (a bounded number at a time): sent ones by their outcome, the others deferred.
        let jobs: Vec<(usize, Option<(Outcome, bool)>)> = (0..plan.records.len())
            .map(|i| (i, outcomes.remove(&i).filter(|_| !skipped.contains(&i))))
            .collect();
        let (alerts_ref, records) = (&alerts, &plan.records);
        // the futures are built first (not by a closure inside the stream), so the flush future stays `Send`
        let plans = &plans;
        let threaded = &threaded;
        let jobs: Vec<_> = jobs
            .into_iter()
            .map(|(i, outcome)| async move {
                if threaded.contains(&i) {
                    return (
                        i,
                        self.hand_to_thread(&records[i], alerts_ref, last_start, deadline_ms)
                            .await,
                    );
                }
                (i, self.settle(&records[i], alerts_ref, plans.get(&i), outcome).await)
            })
            .collect();
        let settled: Vec<(usize, Settled)> = futures::stream::iter(jobs)
            .buffer_unordered(crate::defaults::FLUSH_SETTLE_CONCURRENCY)
            .collect()
            .await;
        let mut finished: Vec<&ReceivedMessage> = done.iter().collect();
        for (i, s) in &settled {
            report.add(&s.report);
            if s.delete {
                finished.extend(plan.records[*i].members.iter().map(|m| &alerts[*m].msg));
            }
        }
        self.delete_all(&finished).await;
        FlushFinished { report: &report }.emit();
        report
    }

    /// The envelope a planned record travels in: the alert itself for a lone alert, else an aggregate.
    /// Its thread plan is kept only for a record handed to its thread (`to_thread`): one sent in a batch,
    /// or retried through the realtime path after a Batch API failure, is delivered as without threads (a
    /// batch record never opens a thread).
    fn envelope_for(&self, record: &PlannedRecord, alerts: &[Claimed], to_thread: bool) -> Envelope {
        let first = &alerts[record.members[0]];
        let mut env = if record.members.len() == 1 {
            first.env.clone()
        } else {
            let received = record
                .members
                .iter()
                .map(|m| alerts[*m].env.received_at_ms)
                .min()
                .unwrap_or(first.env.received_at_ms);
            Envelope::aggregate(record.clone(), received)
        };
        if !to_thread {
            env.leave_thread();
        }
        env
    }
}
