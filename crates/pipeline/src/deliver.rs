//! deliver: claim → (look up, when an earlier attempt was ambiguous) → create → store the record → ack;
//! retryable failures are delayed with the backoff policy; permanent ones and exhausted windows go to the
//! dead-letter queue with a notification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_core::batch::{self, PlannedRecord};
use relay_core::{BackoffPolicy, NextAttempt, RecordType};
use relay_ports::{Accept, Claim, FailureNotice, LedgerEntry, PortError, ReceivedMessage, RecordRef};
use servicenow_client::{CreatedRecord, Outcome, ServiceNowClient};

use crate::Ports;
use crate::envelope::{DeadLetter, Envelope, Item};
use crate::ingest::new_entry;
use crate::secrets::ServiceNowTarget;
use crate::telemetry::{
    DeliveryFailed, DeliveryRetrying, MessageUnreadable, RecordCreated, RecordDelivered, ServiceNowCalled,
    TelemetryEvent,
};

/// What to do with a message after handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Finished (record exists, or dead-lettered): delete the message.
    Done,
    /// Keep the message: it comes back when its visibility delay ends.
    RetryLater,
}

/// Settings shared by deliver and flush.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub backoff: BackoffPolicy,
    /// How long a claim holds an alert before another deliverer may take it over.
    pub lease: Duration,
    pub ledger_retention: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            backoff: BackoffPolicy::default(),
            lease: crate::defaults::LEASE,
            ledger_retention: crate::defaults::LEDGER_RETENTION,
        }
    }
}

/// A jitter source in `[0, 1)`.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Uniform jitter from the thread RNG.
pub fn random_jitter() -> Jitter {
    Arc::new(rand::random::<f64>)
}

/// Everything a delivery needs; shared by [`Deliverer`] and the flush.
pub struct Delivery {
    pub ports: Ports,
    pub servicenow: Arc<ServiceNowTarget>,
    pub settings: DeliverySettings,
    pub jitter: Jitter,
    /// Resolved employees: (sys_user field, value) → sys_id or none, and when that answer expires.
    people: Arc<Mutex<PersonCache>>,
}

/// (sys_user field, value) → the user's sys_id (or none), and when that answer expires.
type PersonCache = HashMap<(String, String), (Option<String>, Instant)>;

/// What became of an employee lookup.
enum Person {
    Found(String),
    Missing,
    Unavailable,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Another attempt is due after this delay (the caller delays or re-sends the message).
    RetryIn(Duration),
    /// Given up: the envelope is in the dead-letter queue and the on-call was notified.
    DeadLettered,
}

fn record_ref(r: CreatedRecord) -> RecordRef {
    RecordRef {
        table: r.table,
        sys_id: r.sys_id,
        number: r.number,
        link: r.link,
    }
}

fn event_link(client: &ServiceNowClient, correlation_id: &str) -> String {
    format!(
        "{}/em_event_list.do?sysparm_query=message_key%3D{correlation_id}",
        client.instance_url()
    )
}

fn severity_of(env: &Envelope) -> &'static str {
    match &env.item {
        Item::Alert { decision, .. } => decision.severity.as_str(),
        Item::Aggregate { .. } => "batch",
    }
}

impl Delivery {
    /// A delivery over `ports`, with random jitter.
    pub fn new(ports: &Ports, servicenow: ServiceNowTarget, settings: DeliverySettings) -> Delivery {
        Delivery {
            ports: ports.clone(),
            servicenow: Arc::new(servicenow),
            settings,
            jitter: random_jitter(),
            people: Arc::default(),
        }
    }

    /// The same delivery (ServiceNow target, settings, jitter and person cache) over other ports.
    pub fn with_ports(&self, ports: Ports) -> Delivery {
        Delivery {
            ports,
            servicenow: Arc::clone(&self.servicenow),
            settings: self.settings.clone(),
            jitter: self.jitter.clone(),
            people: Arc::clone(&self.people),
        }
    }

    /// The same delivery with a fixed jitter source (tests).
    pub fn with_jitter(self, jitter: Jitter) -> Delivery {
        Delivery { jitter, ..self }
    }

    /// Create (or, after an ambiguous attempt, find) the record for `env`. Returns the outcome and whether
    /// the record was found rather than created.
    pub async fn create(&self, env: &Envelope, lookup_first: bool) -> (Outcome, bool) {
        let client = match self.servicenow.client().await {
            Ok(c) => c,
            Err(o) => return (o, false),
        };
        let started = Instant::now();
        let outcome = if env.record_type() == RecordType::ItomEvent {
            // Event Management de-duplicates on message_key: resending is safe, no lookup needed.
            match client
                .send_events(&[serde_json::Value::Object(env.fields().clone())])
                .await
            {
                Ok(_) => Outcome::Created(CreatedRecord {
                    table: "em_event".into(),
                    sys_id: String::new(),
                    number: None,
                    link: event_link(&client, env.correlation_id()),
                }),
                Err(o) => o,
            }
        } else {
            if lookup_first {
                match client.find_by_key(env.table(), &env.record_key()).await {
                    Ok(Some(found)) => return (Outcome::Created(found), true),
                    Ok(None) => {}
                    Err(o) => return (o, false),
                }
            }
            let person = match &env.item {
                Item::Alert { decision, .. } => self.with_person(&client, decision).await,
                Item::Aggregate { .. } => None,
            };
            let created = match person {
                Some(fields) => client.create_record(env.table(), &fields).await,
                None => client.create_record(env.table(), env.fields()).await,
            };
            if let (Outcome::Created(rec), Item::Aggregate { record }) = (&created, &env.item) {
                attach_member_list(&client, record, rec).await;
            }
            created
        };
        ServiceNowCalled {
            outcome: outcome.class(),
            elapsed: started.elapsed(),
        }
        .emit();
        (outcome, false)
    }

    /// The decision's fields with the employee's `sys_user` in the profile's person fields, or a note on the
    /// record when there is none; None when the record names no person (pseudonymised, no person fields).
    /// Answers are cached for the config's TTL; a miss is not an error.
    pub async fn with_person(
        &self,
        client: &ServiceNowClient,
        decision: &relay_core::Decision,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let p = decision.person.as_ref()?;
        let field = p.match_by.field();
        let key = (field.to_string(), p.value.clone());
        let now = Instant::now();
        let cached = self
            .people
            .lock()
            .ok()
            .and_then(|m| m.get(&key).filter(|(_, until)| *until > now).map(|(v, _)| v.clone()));
        let person = match cached {
            Some(Some(id)) => Person::Found(id),
            Some(None) => Person::Missing,
            None => match client.find_user(field, &p.value).await {
                Ok(found) => {
                    if let Ok(mut m) = self.people.lock() {
                        m.insert(key, (found.clone(), now + Duration::from_secs(p.cache_ttl_seconds)));
                    }
                    found.map_or(Person::Missing, Person::Found)
                }
                // a lookup that fails now does not hold the record back
                Err(_) => Person::Unavailable,
            },
        };
        let mut fields = decision.fields.clone();
        let note = match person {
            Person::Found(id) => {
                for f in &p.fields {
                    fields.insert(f.clone(), serde_json::Value::String(id.clone()));
                }
                return Some(fields);
            }
            Person::Missing => format!(
                "no sys_user has {field} = the employee's; {} left empty",
                p.fields.join(", ")
            ),
            Person::Unavailable => format!(
                "the employee could not be looked up in sys_user now; {} left empty",
                p.fields.join(", ")
            ),
        };
        if let Some(serde_json::Value::String(text)) = fields.get_mut(&decision.description_field) {
            text.push_str(&format!("\n\nPerson: {note}"));
        }
        Some(fields)
    }

    /// Record a created record in the ledger for the envelope's key and every alert it covers, and count
    /// the record.
    pub async fn succeeded(
        &self,
        env: &Envelope,
        entry: &LedgerEntry,
        record: RecordRef,
        found: bool,
    ) -> Result<(), PortError> {
        self.settled(env, entry, record, found).await?;
        self.count_record(env);
        Ok(())
    }

    /// One record `env` describes was made.
    pub fn count_record(&self, env: &Envelope) {
        RecordCreated {
            record_type: env.record_type().as_str(),
            severity: severity_of(env),
        }
        .emit();
    }

    /// The ledger, latency metric and audit line for a created record, without counting the record: a batch
    /// aggregate settles each member alert this way and is counted once.
    pub async fn settled(
        &self,
        env: &Envelope,
        entry: &LedgerEntry,
        record: RecordRef,
        found: bool,
    ) -> Result<(), PortError> {
        let now = self.ports.clock.now_ms();
        for key in env.covered_keys() {
            self.ports.ledger.complete(&key, &record, now).await?;
        }
        RecordDelivered {
            key: &env.ledger_key(),
            alert_ids: &env.alert_ids(),
            record: &record,
            attempts: entry.attempts,
            found_existing: found,
            severity: severity_of(env),
            latency: Duration::from_millis((now - env.received_at_ms).max(0) as u64),
        }
        .emit();
        Ok(())
    }

    /// After a failed attempt: schedule the next one, or give up. On [`AfterFailure::RetryIn`] the caller
    /// delays its message (or re-sends the envelope) by the returned delay.
    pub async fn failed(&self, env: &Envelope, entry: &LedgerEntry, outcome: Outcome) -> AfterFailure {
        let now = self.ports.clock.now_ms();
        let key = env.ledger_key();
        let (class, reason, retry_after) = match &outcome {
            Outcome::Permanent {
                message,
                detail,
                status,
            } => {
                let msg = match detail {
                    Some(d) => format!("HTTP {status}: {message}: {d}"),
                    None => format!("HTTP {status}: {message}"),
                };
                return self.settle_give_up(env, entry, "permanent", &msg).await;
            }
            Outcome::Retryable { retry_after, reason } => ("retryable", reason.clone(), *retry_after),
            Outcome::Ambiguous { reason } => ("ambiguous", reason.clone(), None),
            Outcome::Auth { message } => ("auth", message.clone(), None),
            Outcome::Created(_) => unreachable!("not a failure"),
        };
        let elapsed = Duration::from_millis((now - entry.first_received_at_ms).max(0) as u64);
        match self
            .settings
            .backoff
            .next_attempt(entry.attempts.max(1), elapsed, retry_after, (self.jitter)())
        {
            NextAttempt::After(delay) => {
                let ambiguous = matches!(outcome, Outcome::Ambiguous { .. });
                if let Err(e) = self
                    .ports
                    .ledger
                    .retry_later(&key, class, &reason, ambiguous, now)
                    .await
                {
                    tracing::error!(alert_id = %key, error = %e, "could not record the retry in the ledger");
                }
                DeliveryRetrying {
                    key: &key,
                    table: env.table(),
                    error_class: class,
                    error: &reason,
                    attempts: entry.attempts,
                    delay,
                }
                .emit();
                AfterFailure::RetryIn(delay)
            }
            NextAttempt::GiveUp => {
                let msg = format!(
                    "gave up after {} attempts over {} min; last error ({class}): {reason}",
                    entry.attempts,
                    elapsed.as_secs() / 60
                );
                self.settle_give_up(env, entry, "window_exhausted", &msg).await
            }
        }
    }

    async fn settle_give_up(
        &self,
        env: &Envelope,
        entry: &LedgerEntry,
        class: &'static str,
        error: &str,
    ) -> AfterFailure {
        if self.give_up(env, entry, class, error).await {
            AfterFailure::DeadLettered
        } else {
            // the dead-letter queue is down: keep the alert and try to dead-letter it again later
            AfterFailure::RetryIn(Duration::from_secs(60))
        }
    }

    /// Dead-letter the envelope, mark every covered alert failed, notify. If the dead-letter queue cannot
    /// be written, the alert stays retryable (nothing is lost): the caller keeps the message.
    async fn give_up(&self, env: &Envelope, entry: &LedgerEntry, class: &'static str, error: &str) -> bool {
        let now = self.ports.clock.now_ms();
        let key = env.ledger_key();
        let mut dead = env.clone();
        dead.dead_letter = Some(DeadLetter {
            error_class: class.into(),
            error: error.into(),
            failed_at_ms: now,
            attempts: entry.attempts,
        });
        if let Err(e) = self.ports.dlq.send(&dead.to_json(), Duration::ZERO).await {
            tracing::error!(alert_id = %key, error = %e, "dead-letter queue unavailable; keeping the alert for retry");
            let _ = self.ports.ledger.retry_later(&key, class, error, false, now).await;
            return false;
        }
        for id in env.covered_keys() {
            if let Err(e) = self.ports.ledger.fail(&id, class, error, now).await {
                tracing::error!(alert_id = %id, error = %e, "could not mark the alert failed");
            }
        }
        let notice = FailureNotice {
            alert_id: key.clone(),
            severity: severity_of(env).to_string(),
            record_type: env.record_type().as_str().to_string(),
            table: env.table().to_string(),
            rule: entry.rule.clone(),
            correlation_id: env.correlation_id().to_string(),
            error_class: class.into(),
            error: error.into(),
            attempts: entry.attempts,
            first_received_at_ms: entry.first_received_at_ms,
        };
        if let Err(e) = self.ports.notifier.delivery_failed(&notice).await {
            tracing::error!(alert_id = %key, error = %e, "failure notification not sent (the alert is in the DLQ)");
        }
        DeliveryFailed {
            key: &key,
            table: env.table(),
            error_class: class,
            error,
            attempts: entry.attempts,
        }
        .emit();
        true
    }

    /// Dead-letter a message whose body cannot be read at all (it can never be delivered).
    pub async fn poison(&self, body: &str, why: &str) -> Result<(), PortError> {
        self.ports.dlq.send(body, Duration::ZERO).await?;
        MessageUnreadable { bytes: body.len(), why }.emit();
        Ok(())
    }

    /// Claim `key`, creating its ledger entry from the envelope when it is missing.
    pub async fn claim(&self, env: &Envelope) -> Result<Claim, PortError> {
        let key = env.ledger_key();
        let lease = self.settings.lease.as_millis() as i64;
        let ledger = &self.ports.ledger;
        match ledger.claim(&key, self.ports.clock.now_ms(), lease).await? {
            Claim::Missing => {
                let webhook_id = match &env.item {
                    Item::Alert { webhook_id, .. } => webhook_id.as_deref(),
                    Item::Aggregate { .. } => None,
                };
                if let Accept::New = ledger
                    .accept(&new_entry(env, webhook_id, self.settings.ledger_retention))
                    .await?
                {
                    tracing::info!(alert_id = %key, "ledger entry was missing; recreated from the message");
                }
                ledger.claim(&key, self.ports.clock.now_ms(), lease).await
            }
            other => Ok(other),
        }
    }
}

/// Upload an aggregate's full member list to its newly created record, as [`batch::MEMBER_LIST_FILE`].
/// Best effort: the record exists and its description names the first members and counts the rest, so a
/// failed upload is logged and does not make the delivery fail (it would create the record again).
pub async fn attach_member_list(client: &ServiceNowClient, record: &PlannedRecord, created: &CreatedRecord) {
    let Some(list) = record.member_list.as_ref() else {
        return;
    };
    if let Err(o) = client
        .attach(
            &created.table,
            &created.sys_id,
            batch::MEMBER_LIST_FILE,
            "text/plain",
            list.clone().into_bytes(),
        )
        .await
    {
        tracing::warn!(
            correlation_id = %record.correlation_id,
            sys_id = %created.sys_id,
            error = %o,
            "could not attach the member list to the aggregate record"
        );
    }
}

/// Whether an attempt must look the record up before creating it: after an ambiguous outcome, and on every
/// later attempt, because an earlier attempt may have died mid-call (process killed, Lambda timeout) and left
/// no outcome in the ledger at all. A first attempt never pays for the lookup.
pub fn must_look_up(entry: &LedgerEntry) -> bool {
    entry.needs_lookup || entry.attempts > 1
}

/// The realtime deliverer: one message at a time, many concurrently.
#[derive(Clone)]
pub struct Deliverer {
    pub delivery: Arc<Delivery>,
}

impl Deliverer {
    pub fn new(delivery: Arc<Delivery>) -> Self {
        Deliverer { delivery }
    }

    /// Handle one message from the realtime queue.
    pub async fn handle(&self, msg: &ReceivedMessage) -> Disposition {
        let d = &self.delivery;
        let env = match Envelope::from_json(&msg.body) {
            Ok(e) => e,
            Err(e) => {
                return match d.poison(&msg.body, &format!("not an alert envelope: {e}")).await {
                    Ok(()) => Disposition::Done,
                    Err(_) => Disposition::RetryLater,
                };
            }
        };
        let entry = match d.claim(&env).await {
            Ok(Claim::Claimed(entry)) => entry,
            Ok(Claim::Completed(_) | Claim::Failed(_)) => return Disposition::Done,
            Ok(Claim::Busy { lease_until_ms }) => {
                let wait = Duration::from_millis((lease_until_ms - d.ports.clock.now_ms()).max(1000) as u64);
                self.delay(msg, wait).await;
                return Disposition::RetryLater;
            }
            Ok(Claim::Missing) | Err(_) => {
                tracing::warn!(alert_id = %env.ledger_key(), "ledger unavailable; the message will come back");
                return Disposition::RetryLater;
            }
        };
        let (outcome, found) = d.create(&env, must_look_up(&entry)).await;
        match outcome {
            Outcome::Created(rec) => match d.succeeded(&env, &entry, record_ref(rec), found).await {
                Ok(()) => Disposition::Done,
                Err(e) => {
                    // The record exists but the ledger did not take it: the next attempt looks it up.
                    tracing::error!(alert_id = %env.ledger_key(), error = %e, "record created but ledger not updated");
                    let now = d.ports.clock.now_ms();
                    let _ = d
                        .ports
                        .ledger
                        .retry_later(&env.ledger_key(), "ambiguous", "ledger update failed", true, now)
                        .await;
                    Disposition::RetryLater
                }
            },
            failure => match d.failed(&env, &entry, failure).await {
                AfterFailure::RetryIn(delay) => {
                    self.delay(msg, delay).await;
                    Disposition::RetryLater
                }
                AfterFailure::DeadLettered => Disposition::Done,
            },
        }
    }

    async fn delay(&self, msg: &ReceivedMessage, delay: Duration) {
        if let Err(e) = self
            .delivery
            .ports
            .realtime
            .change_visibility(&msg.receipt, delay)
            .await
        {
            tracing::warn!(message_id = %msg.message_id, error = %e, "could not delay the message; it returns after the visibility timeout");
        }
    }

    /// One round of the local worker: receive up to `max` messages from the realtime queue (waiting up to
    /// `wait`), handle them, delete the finished ones. Returns how many were received.
    pub async fn poll_once(&self, max: u32, wait: Duration) -> Result<usize, PortError> {
        let queue = &self.delivery.ports.realtime;
        let messages = queue.receive(max, wait).await?;
        let n = messages.len();
        for (m, disposition) in self.handle_all(messages).await {
            if disposition == Disposition::Done
                && let Err(e) = queue.delete(&m.receipt).await
            {
                tracing::warn!(message_id = %m.message_id, error = %e, "could not delete a delivered message");
            }
        }
        Ok(n)
    }

    /// Handle a batch of messages concurrently; a failure or panic in one never affects the others.
    /// Returns each message with what to do with it.
    pub async fn handle_all(&self, messages: Vec<ReceivedMessage>) -> Vec<(ReceivedMessage, Disposition)> {
        let tasks: Vec<_> = messages
            .into_iter()
            .map(|m| {
                let me = self.clone();
                let msg = m.clone();
                (m, tokio::spawn(async move { me.handle(&msg).await }))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (m, task) in tasks {
            let disposition = match task.await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(message_id = %m.message_id, error = %e, "delivery task panicked; message kept for retry");
                    Disposition::RetryLater
                }
            };
            out.push((m, disposition));
        }
        out
    }
}
