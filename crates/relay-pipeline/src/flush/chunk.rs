//! One Batch API request of a flush: seal the chunk's aggregates, name each record's person, send it, upload
//! the created records' files. A flush sends up to [`crate::defaults::FLUSH_BATCH_CONCURRENCY`] chunks at
//! once, each in its own batch-lane slot of the concurrency limit (so realtime calls still go first): a
//! storm's hundreds of aggregates are not sent one request after another.

use std::collections::{HashMap, HashSet};

use relay_core::batch::{BatchPlan, PlannedRecord};
use relay_ports::LedgerEntry;
use servicenow_client::{BatchItem, CreatedRecord, Outcome, ServiceNowClient};

use super::{Claimed, Flusher};
use crate::concurrency::Lane;
use crate::telemetry::{BatchSent, TelemetryEvent};

/// What the flush knows before its chunks go out.
pub(super) struct Chunks<'a> {
    pub plan: &'a BatchPlan,
    pub alerts: &'a [Claimed],
    pub client: &'a Result<ServiceNowClient, Outcome>,
    /// Records already settled by a lookup (found) or an event call: not sent again.
    pub outcomes: &'a HashMap<usize, (Outcome, bool)>,
    /// Records left for the next flush.
    pub skipped: &'a HashSet<usize>,
    pub last_start: i64,
    pub deadline_ms: i64,
    /// Seals run one at a time across chunks: each is one small ledger transaction, and concurrent
    /// transactions only contend (moto's are not even safe to run concurrently).
    pub seal_lock: &'a tokio::sync::Mutex<()>,
}

/// What one chunk did.
#[derive(Default)]
pub(super) struct ChunkResult {
    pub outcomes: Vec<(usize, (Outcome, bool))>,
    /// Aggregates sealed in the ledger for this chunk, by record.
    pub sealed: Vec<(usize, LedgerEntry)>,
    /// Records not sent: left for the next flush.
    pub skipped: Vec<usize>,
    /// True when the chunk's Batch API request went out.
    pub sent: bool,
}

impl Flusher {
    /// Upload a record's files after its Batch API request answered ([`crate::deliver::attach_files`]),
    /// also when it answered after the last start, until half of the settle reserve is left (settling the
    /// records is quick ledger work). Created, or — when the employee document's file is not uploaded (it
    /// failed, or the deadline came first) — the failure that makes the next attempt find the record and
    /// upload it.
    async fn with_files(
        &self,
        c: &ServiceNowClient,
        r: &PlannedRecord,
        rec: CreatedRecord,
        deadline_ms: i64,
    ) -> Outcome {
        let files = crate::deliver::Files::of_record(r);
        if files.is_empty() {
            return Outcome::Created(rec);
        }
        let until = deadline_ms - self.settings.settle_reserve.as_millis() as i64 / 2;
        let left = self.delivery.until(until);
        let uploaded = if left.is_zero() {
            None
        } else {
            tokio::time::timeout(left, crate::deliver::attach_files(c, &files, &rec, false))
                .await
                .ok()
        };
        match uploaded {
            Some(Ok(())) => Outcome::Created(rec),
            Some(Err(pending)) => pending,
            None if files.document.is_some() => Outcome::Ambiguous {
                reason: format!(
                    "{} {} exists but the flush deadline came before its document file was uploaded",
                    rec.table,
                    rec.number.as_deref().unwrap_or(&rec.sys_id)
                ),
            },
            None => {
                tracing::warn!(sys_id = %rec.sys_id, "flush deadline: the attachment was not uploaded");
                Outcome::Created(rec)
            }
        }
    }

    /// Send one chunk. A chunk that cannot start before the flush's last start (no slot in time, the deadline
    /// passed, the breaker closed) sends nothing: its records get no outcome and wait for the next flush.
    pub(super) async fn send_chunk(&self, chunk: &[usize], cx: &Chunks<'_>) -> ChunkResult {
        let d = &self.delivery;
        let mut result = ChunkResult::default();
        if !self.open(cx.last_start) {
            return result;
        }
        // a slot in the batch lane (behind every waiting realtime call), waited for until the last start
        let Ok(slot) = tokio::time::timeout(d.until(cx.last_start), d.slot(Lane::Batch)).await else {
            return result;
        };
        if !self.open(cx.last_start) {
            return result;
        }
        let unsettled = |i: &usize| !cx.outcomes.contains_key(i) && !cx.skipped.contains(i);
        let to_seal: Vec<usize> = chunk
            .iter()
            .copied()
            .filter(|i| cx.plan.records[*i].members.len() > 1 && unsettled(i))
            .collect();
        if !to_seal.is_empty() {
            let _one_at_a_time = cx.seal_lock.lock().await;
            for i in to_seal {
                match self
                    .seal(&cx.plan.records[i], cx.alerts, cx.last_start, cx.deadline_ms)
                    .await
                {
                    Ok(entry) => result.sealed.push((i, entry)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not seal an aggregate; its alerts wait for the next flush");
                        result.skipped.push(i);
                    }
                }
            }
        }
        let mut items: Vec<BatchItem> = Vec::with_capacity(chunk.len());
        for &i in chunk.iter().filter(|i| unsettled(i) && !result.skipped.contains(i)) {
            let record = &cx.plan.records[i];
            let now_unix = d.ports.clock.now_ms().div_euclid(1000);
            let mut fields =
                relay_core::ValidTo::apply(record.valid_to.as_ref(), &record.fields, now_unix).into_owned();
            // each record names its person, as a realtime record does
            if let (Ok(c), Some(p)) = (cx.client, &record.person) {
                match d.with_person(c, p, &fields).await {
                    Ok(with) => fields = with,
                    // the table requires the person and sys_user cannot be asked now: not sent
                    Err(o) => {
                        result.outcomes.push((i, (o, false)));
                        continue;
                    }
                }
            }
            items.push(BatchItem {
                id: i.to_string(),
                table: record.table.clone(),
                fields,
            });
        }
        if items.is_empty() {
            return result;
        }
        result.sent = true;
        BatchSent { items: items.len() }.emit();
        let index = |item: &BatchItem| item.id.parse::<usize>().unwrap_or(usize::MAX);
        let c = match cx.client {
            Err(o) => {
                result
                    .outcomes
                    .extend(items.iter().map(|it| (index(it), (o.clone(), false))));
                return result;
            }
            Ok(c) => c,
        };
        match c.send_batch(&items).await {
            Ok(results) => {
                let mut answered: HashSet<usize> = HashSet::new();
                for (id, o) in results {
                    d.observe(&o);
                    let Ok(i) = id.parse::<usize>() else { continue };
                    answered.insert(i);
                    let o = match (o, cx.plan.records.get(i)) {
                        (Outcome::Created(rec), Some(r)) => self.with_files(c, r, rec, cx.deadline_ms).await,
                        (o, _) => o,
                    };
                    result.outcomes.push((i, (o, false)));
                }
                for it in items.iter().filter(|it| !answered.contains(&index(it))) {
                    let missing = Outcome::Ambiguous {
                        reason: "no result for the item in the batch response".into(),
                    };
                    result.outcomes.push((index(it), (missing, false)));
                }
            }
            Err(o) => {
                d.observe(&o);
                slot.answered_batch(&o);
                result
                    .outcomes
                    .extend(items.iter().map(|it| (index(it), (o.clone(), false))));
            }
        }
        result
    }
}
