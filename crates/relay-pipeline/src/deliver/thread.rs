//! Threads (docs/record-lifecycle.md): a realtime alert whose thread has an open record the relay opened
//! within the thread window becomes a journal entry on it instead of a new record.
//!
//! A thread is a ledger entry keyed by its [`ThreadPlan::key`], kept through the same conditional writes
//! as an alert's: the first alert of a thread claims the entry (so two alerts arriving together never
//! both open a record), creates its own record and completes the thread's entry with it; the entry
//! expires when the window ends. A later alert finds the entry completed, reads its record's state and
//! writes a note carrying its correlation id's marker — after an ambiguous attempt it first looks for its
//! own record and for that marker in the record's journal, so a note is not written twice where the
//! journal is readable. When the record is done (resolved, closed, cancelled), the thread goes on in its
//! next generation (`<key>#<n>`): a new record that references the done one.

use std::collections::BTreeSet;

use relay_core::config::ClosedPolicy;
use relay_core::{PriorityMethod, ThreadPlan, ThreadStats};
use relay_ports::{Accept, Claim, DeliveryState, LedgerEntry, PortError, RecordRef, RetryLater};
use serde_json::{Map, Value};
use servicenow_client::{Outcome, ServiceNowClient};

use super::Delivery;
use super::claim::Held;
use crate::envelope::{Envelope, Item};
use crate::ingest::new_entry;
use crate::lifecycle::{is_marked, leading_markers};
use crate::telemetry::{TelemetryEvent, ThreadEscalated};

/// How many generations of one thread (each a record that was done before the next alert came) are
/// followed before an alert opens a record of its own, unthreaded.
pub const MAX_GENERATIONS: u32 = 8;

/// What an attempt's message became: a record of its own, a thread's opener or note, or a lifecycle event
/// applied to its alert's record.
#[derive(Debug)]
pub enum Role {
    /// No thread (or none could be used): the alert's own record, as without threads.
    Alone,
    /// A lifecycle event, noted on its alert's record (`resolved`: the done state it moved the record to).
    Event {
        resolved: Option<crate::callback::Resolved>,
    },
    /// The alert opened the thread's record and holds the thread's entry (complete it with the record,
    /// or release it).
    Opener(Box<LedgerEntry>),
    /// The alert is a journal entry on the thread's record (`escalated`: the ServiceNow priority this
    /// attempt raised the record to).
    Note { escalated: Option<String> },
    /// The thread's first alert is opening its record right now: come back then, with nothing sent.
    Wait { until_ms: i64 },
}

/// Where a thread stands for one alert.
enum Joined {
    Alone,
    Opener {
        thread: Box<LedgerEntry>,
        follows: Option<RecordRef>,
    },
    /// The record is open: note the alert on it (with the thread entry's opener stats).
    Note(RecordRef, Option<String>),
    /// An earlier attempt's note is on this (since done) record.
    Noted(RecordRef),
    Wait {
        until_ms: i64,
    },
}

pub(crate) fn generation_key(plan: &ThreadPlan, generation: u32) -> String {
    match generation {
        0 => plan.key.clone(),
        n => format!("{}#{n}", plan.key),
    }
}

/// The thread plan of an envelope: alerts routed with threads on, and records a flush handed to their
/// thread.
pub(super) fn plan_of(env: &Envelope) -> Option<&ThreadPlan> {
    match &env.item {
        Item::Alert { decision, .. } => decision.thread.as_ref(),
        Item::Aggregate { record } => record.thread.as_ref(),
        Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => None,
    }
}

impl Delivery {
    /// Whether the thread of `plan` has a record (or its first alert is opening one right now), from the
    /// ledger alone: a generation completed with a record within the thread's window, or one in flight.
    /// What the flush asks before it batches a record whose alerts are in a thread. A ledger that cannot
    /// be read answers false: the record is batched as without threads.
    pub(crate) async fn has_open_thread(&self, plan: &ThreadPlan) -> bool {
        let mut open = false;
        for generation in 0..MAX_GENERATIONS {
            match self.ports.ledger.get(&generation_key(plan, generation)).await {
                Ok(Some(e)) if e.state == DeliveryState::Completed && e.record.is_some() => open = true,
                Ok(Some(e)) if !e.state.is_final() => return true,
                Ok(_) | Err(_) => return open,
            }
        }
        open
    }

    /// The entry of a thread generation, claimed when it is open to a new record (missing, expired, or left
    /// by an opener that failed).
    async fn claim_thread(&self, env: &Envelope, plan: &ThreadPlan, key: &str) -> Result<Claim, PortError> {
        let lease = self.settings.lease.as_millis() as i64;
        let ledger = &self.ports.ledger;
        let now = self.ports.clock.now_ms();
        let claim = ledger.claim(key, now, lease).await?;
        let expired = |e: &LedgerEntry| e.expires_at_s <= now.div_euclid(1000);
        match claim {
            Claim::Missing => {}
            Claim::Completed(ref e) if expired(e) => {}
            other => return Ok(other),
        }
        let mut entry = new_entry(env, None, self.settings.ledger_retention);
        entry.alert_id = key.to_string();
        entry.delivery = relay_ports::THREAD_DELIVERY.into();
        entry.first_received_at_ms = now;
        entry.updated_at_ms = now;
        entry.expires_at_s = now.div_euclid(1000) + plan.window_s;
        // the opener's part in the thread's escalation (the notes carry theirs)
        entry.plan = Some(serde_json::json!({"risk": plan.risk, "channel": plan.channel}).to_string());
        match ledger.accept(&entry).await? {
            Accept::New => ledger.claim(key, now, lease).await,
            // written meanwhile by another alert of the thread
            Accept::Duplicate(_) => ledger.claim(key, now, lease).await,
        }
    }

    /// Find where the thread stands: walk its generations until one is open to this alert. After an
    /// ambiguous attempt (`lookup_first`) a done record's journal is checked for this alert's note, which
    /// the lost answer may have written before the record was closed.
    async fn join(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        plan: &ThreadPlan,
        lookup_first: bool,
    ) -> Result<Joined, Outcome> {
        let mut follows = None;
        for generation in 0..MAX_GENERATIONS {
            let key = generation_key(plan, generation);
            let claim = self
                .claim_thread(env, plan, &key)
                .await
                .map_err(|e| Outcome::Retryable {
                    retry_after: None,
                    reason: format!("the thread's ledger entry could not be read: {e}"),
                })?;
            let (record, opener) = match claim {
                Claim::Claimed(thread) => {
                    // The previous opener's create was ambiguous: its record may exist. Found, it is the
                    // thread's record (this alert becomes a note on it); the opener's own retry finds it
                    // by its key either way.
                    if thread.needs_lookup && thread.correlation_id != env.correlation_id() {
                        let theirs = crate::envelope::record_key(env.dedupe(), &thread.correlation_id);
                        if let Some(found) = client.find_by_key(env.table(), &theirs).await? {
                            let record = super::record_ref(found);
                            let now = self.ports.clock.now_ms();
                            if let Err(e) = self.ports.ledger.complete(&key, thread.claim_token, &record, now).await {
                                tracing::warn!(thread = %key, error = %e, "could not complete the thread with its found record");
                            }
                            return Ok(Joined::Note(record, thread.plan.clone()));
                        }
                    }
                    return Ok(Joined::Opener {
                        thread: Box::new(thread),
                        follows,
                    });
                }
                Claim::Busy {
                    lease_until_ms: until_ms,
                }
                | Claim::NotBefore { until_ms } => {
                    return Ok(Joined::Wait { until_ms });
                }
                Claim::Completed(e) => match e.record {
                    Some(r) => (r, e.plan),
                    None => return Ok(Joined::Alone),
                },
                Claim::Failed(_) | Claim::Aggregated(_) | Claim::Missing => return Ok(Joined::Alone),
            };
            let state = super::field_of(client, &record, "state").await?;
            match state {
                Some(s) if !plan.done_states.contains(&s) => return Ok(Joined::Note(record, opener)),
                // done but not final: the route may note on it, or reopen it
                Some(s) if plan.closed != ClosedPolicy::NewLinked && !plan.final_states.contains(&s) => {
                    if lookup_first && self.noted_on(client, env, plan, &record).await? {
                        return Ok(Joined::Noted(record));
                    }
                    match (plan.closed, &plan.reopen_state) {
                        (ClosedPolicy::NoteOnly, _) => return Ok(Joined::Note(record, opener)),
                        (ClosedPolicy::Reopen, Some(back)) => {
                            if self.reopen(client, env, plan, &record, back).await? {
                                return Ok(Joined::Note(record, opener));
                            }
                            follows = Some(record);
                        }
                        _ => follows = Some(record),
                    }
                }
                // done, or gone (deleted, or no longer readable): the thread goes on in a new record
                _ => {
                    if lookup_first && self.noted_on(client, env, plan, &record).await? {
                        return Ok(Joined::Noted(record));
                    }
                    follows = Some(record);
                }
            }
        }
        Ok(Joined::Alone)
    }

    /// Reopen a done (not final) record to `state` with a note saying why; false when the instance refuses
    /// (the thread then goes on in a new record).
    async fn reopen(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        plan: &ThreadPlan,
        record: &RecordRef,
        state: &str,
    ) -> Result<bool, Outcome> {
        let mut fields = Map::new();
        fields.insert("state".into(), Value::String(state.to_string()));
        fields.insert(
            plan.journal.clone(),
            Value::String(format!(
                "[relay-reopened {}] Reopened by Alert Relay: another alert of this thread came after it was done.",
                env.correlation_id()
            )),
        );
        match client.update_record(&record.table, &record.sys_id, &fields).await {
            Ok(()) => Ok(true),
            Err(Outcome::Permanent { message, .. }) => {
                tracing::warn!(record = %record.sys_id, error = %message, "the instance refused the reopen; a new record follows it");
                Ok(false)
            }
            Err(o) => Err(o),
        }
    }

    /// Whether `record`'s journal has this alert's note.
    async fn noted_on(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        plan: &ThreadPlan,
        record: &RecordRef,
    ) -> Result<bool, Outcome> {
        let entries = client.journal(&record.table, &record.sys_id, &plan.journal).await?;
        Ok(entries.iter().any(|e| is_marked(&e.value, env.correlation_id())))
    }

    /// One attempt for an alert with a thread plan, under its claim `held`: join the thread, then open
    /// its record, note the alert on it, or create the alert's own record.
    pub(super) async fn threaded(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        plan: &ThreadPlan,
        lookup_first: bool,
        held: &Held,
    ) -> (Outcome, bool, Role) {
        let joined = match self.join(client, env, plan, lookup_first).await {
            Ok(j) => j,
            Err(o) => return (o, false, Role::Alone),
        };
        match joined {
            Joined::Wait { until_ms } => (
                Outcome::Retryable {
                    retry_after: None,
                    reason: "the thread's first alert is opening its record".into(),
                },
                false,
                Role::Wait { until_ms },
            ),
            Joined::Alone => {
                let (o, found) = self
                    .create_with(client, env, lookup_first, Some(held), &Map::new())
                    .await;
                (o, found, Role::Alone)
            }
            Joined::Opener { thread, follows } => {
                let extra = follows.map(|r| follow_fields(env, plan, &r)).unwrap_or_default();
                let thread_held = Held::new(&thread);
                let (o, found) = self
                    .holding(
                        &thread_held,
                        self.create_with(client, env, lookup_first, Some(held), &extra),
                    )
                    .await;
                (o, found, Role::Opener(thread))
            }
            Joined::Noted(record) => (super::created_on(&record), true, Role::Note { escalated: None }),
            Joined::Note(record, opener) => {
                let (o, found, noted) = self.note(client, env, plan, lookup_first, held, &record).await;
                if !noted {
                    return (o, found, Role::Alone);
                }
                let mut escalated = None;
                if matches!(o, Outcome::Created(_)) && !plan.escalation.is_empty() {
                    match self.escalate(client, env, plan, &record, opener.as_deref()).await {
                        Ok(raised) => escalated = raised,
                        // the note is written (a retry finds it); the escalation is tried again
                        Err(failed) => return (failed, false, Role::Note { escalated: None }),
                    }
                }
                (o, found, Role::Note { escalated })
            }
        }
    }

    /// Note the alert on the thread's open `record`. Returns the outcome, whether a record was found rather
    /// than written, and whether the alert is a note (false: its own record was found or made instead).
    async fn note(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        plan: &ThreadPlan,
        lookup_first: bool,
        held: &Held,
        record: &RecordRef,
    ) -> (Outcome, bool, bool) {
        let as_created = || super::created_on(record);
        if lookup_first {
            // an earlier attempt may have made the alert's own record, or its note
            match client.find_by_key(env.table(), &env.record_key()).await {
                Ok(Some(_)) => {
                    let (o, found) = self.create_with(client, env, true, Some(held), &Map::new()).await;
                    return (o, found, false);
                }
                Ok(None) => {}
                Err(o) => return (o, false, true),
            }
            match self.noted_on(client, env, plan, record).await {
                Ok(true) => return (as_created(), true, true),
                Ok(false) => {}
                Err(o) => return (o, false, true),
            }
            if let Some(wait) = held.still_settling(self.ports.clock.now_ms(), "write") {
                return (wait, false, true);
            }
        }
        if let Err(o) = held.confirm(self).await {
            return (o, false, true);
        }
        match client
            .add_journal_entry(&record.table, &record.sys_id, &plan.journal, &plan.note)
            .await
        {
            Ok(()) => (as_created(), false, true),
            // the record refuses notes (closed since its state was read, or no write right on the
            // journal): the alert is not lost, it gets its own record
            Err(Outcome::Permanent { message, .. }) => {
                tracing::warn!(alert_id = %env.ledger_key(), error = %message, "the thread's record refused the note; creating the alert's own record");
                let (o, found) = self.create_with(client, env, false, Some(held), &Map::new()).await;
                (o, found, false)
            }
            Err(o) => (o, false, true),
        }
    }

    /// Raise the thread's record to the strongest escalation step its alerts reach (the opener's part from
    /// the thread entry, each note's from its `[relay-risk …]` marker, this alert's from its plan), once:
    /// a record already at that priority or higher is left alone, so a retry changes nothing. Some: the
    /// ServiceNow priority this call raised it to.
    async fn escalate(
        &self,
        client: &ServiceNowClient,
        env: &Envelope,
        plan: &ThreadPlan,
        record: &RecordRef,
        opener: Option<&str>,
    ) -> Result<Option<String>, Outcome> {
        let mut stats = ThreadStats::default();
        if let Some(v) = opener.and_then(|p| serde_json::from_str::<Value>(p).ok()) {
            let risk = v["risk"].as_u64().map_or(0, |r| r.min(100) as u8);
            stats.add(risk, v["channel"].as_str());
        }
        let entries = client.journal(&record.table, &record.sys_id, &plan.journal).await?;
        let mut seen = BTreeSet::new();
        for e in &entries {
            // each alert's key followed by its risk (an aggregate's note lists several; its own key first,
            // which names no alert)
            let mut key = None;
            for (kind, value) in leading_markers(&e.value) {
                match kind {
                    "key" if !relay_core::batch::is_aggregate_key(value) => key = Some(value),
                    "risk" => {
                        if let (Some(k), Some((risk, channel))) = (key.take(), ThreadStats::parse(value))
                            && seen.insert(k)
                        {
                            stats.add(risk, channel);
                        }
                    }
                    _ => {}
                }
            }
        }
        if !entries.iter().any(|e| is_marked(&e.value, env.correlation_id())) {
            // the journal does not show this alert's note (not readable): count it anyway
            stats.add(plan.risk, plan.channel.as_deref());
        }
        let Some(step) = plan.escalation.iter().find(|s| s.reached(&stats)) else {
            return Ok(None);
        };
        let current: u8 = super::field_of(client, record, "priority")
            .await?
            .and_then(|p| p.parse().ok())
            .unwrap_or(5);
        if current <= step.servicenow_priority {
            return Ok(None);
        }
        let mut fields = Map::new();
        match plan.priority_method {
            PriorityMethod::ImpactUrgency => {
                fields.insert("impact".into(), Value::String(step.impact.to_string()));
                fields.insert("urgency".into(), Value::String(step.urgency.to_string()));
            }
            PriorityMethod::Direct => {
                fields.insert("priority".into(), Value::String(step.servicenow_priority.to_string()));
            }
            PriorityMethod::HrService | PriorityMethod::None => {
                tracing::info!(record = %record.sys_id, table = %record.table,
                    "an escalation step is reached, but the table decides its own priority; not raised");
                return Ok(None);
            }
        }
        let channels: Vec<&str> = stats.channels.iter().map(String::as_str).collect();
        let note = format!(
            "[relay-escalated {name}] Priority raised to {name} (ServiceNow priority {to}, was {current}): this \
             thread has {alerts} alerts, peak risk {peak}, total risk {sum}, {n} distinct channel(s){list}.{why}",
            name = step.when.priority,
            to = step.servicenow_priority,
            alerts = stats.alerts,
            peak = stats.peak_risk,
            sum = stats.sum_risk,
            n = channels.len(),
            list = if channels.is_empty() {
                String::new()
            } else {
                format!(" ({})", channels.join(", "))
            },
            why = thresholds(&step.when),
        );
        fields.insert(plan.journal.clone(), Value::String(note));
        match client.update_record(&record.table, &record.sys_id, &fields).await {
            Ok(()) => {
                ThreadEscalated {
                    record_type: env.record_type().as_str(),
                    priority: step.servicenow_priority,
                }
                .emit();
                Ok(Some(step.servicenow_priority.to_string()))
            }
            Err(Outcome::Permanent { message, .. }) => {
                tracing::warn!(record = %record.sys_id, error = %message, "the instance refused the escalation");
                Ok(None)
            }
            Err(o) => Err(o),
        }
    }

    /// After an attempt with a thread role: complete the thread's entry with the record its opener made, or
    /// release it when the opener failed, so the next alert of the thread may open it.
    pub(super) async fn settle_thread(&self, role: &Role, outcome: &Outcome, held: &Held) {
        let Role::Opener(thread) = role else { return };
        let now = self.ports.clock.now_ms();
        let ledger = &self.ports.ledger;
        let written = match outcome {
            Outcome::Created(rec) => {
                let record = super::record_ref(rec.clone());
                ledger
                    .complete(&thread.alert_id, thread.claim_token, &record, now)
                    .await
            }
            failure => {
                // While the opener's create may still commit (a lost answer, or its settle window still
                // running), no other alert may open the thread: they wait, then look its record up first.
                let ambiguous = matches!(failure, Outcome::Ambiguous { .. });
                let settling = held
                    .no_create_before_ms
                    .filter(|t| *t > now)
                    .or(ambiguous.then(|| now + self.settings.settle.as_millis() as i64));
                let retry = RetryLater {
                    not_before_ms: settling,
                    ..RetryLater::new(failure.class(), "the thread's opening alert is being retried")
                        .needing_lookup(settling.is_some())
                };
                ledger
                    .retry_later(&thread.alert_id, thread.claim_token, &retry, now)
                    .await
            }
        };
        if let Err(e) = written {
            // the entry's lease ends on its own; the next alert of the thread then opens it
            tracing::warn!(thread = %thread.alert_id, error = %e, "could not settle the thread's ledger entry");
        }
    }
}

/// The thresholds of a step, as its note names them: " Thresholds: alerts ≥ 3, peak risk ≥ 90."
fn thresholds(e: &relay_core::config::Escalation) -> String {
    let mut parts = Vec::new();
    if let Some(t) = e.alerts {
        parts.push(format!("alerts ≥ {t}"));
    }
    if let Some(t) = e.peak_risk {
        parts.push(format!("peak risk ≥ {t}"));
    }
    if let Some(t) = e.sum_risk {
        parts.push(format!("total risk ≥ {t}"));
    }
    if let Some(t) = e.channels {
        parts.push(format!("channels ≥ {t}"));
    }
    format!(" Thresholds: {}.", parts.join(", "))
}

/// The fields that make a new record of a thread reference the done one: the profile's link field, or,
/// where the table has none, a line in the record's long text.
fn follow_fields(env: &Envelope, plan: &ThreadPlan, done: &RecordRef) -> Map<String, Value> {
    let mut extra = Map::new();
    match &plan.link_field {
        Some(field) => {
            extra.insert(field.clone(), Value::String(done.sys_id.clone()));
        }
        None => {
            if let Item::Alert { decision, .. } = &env.item {
                let text = env
                    .fields()
                    .get(&decision.description_field)
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = done.number.as_deref().unwrap_or(&done.sys_id);
                extra.insert(
                    decision.description_field.clone(),
                    Value::String(format!("Follows {name} ({}), which was done.\n\n{text}", done.link)),
                );
            }
        }
    }
    extra
}
