//! deliver: claim → (look up, when an earlier attempt was ambiguous) → create → store the record → ack;
//! retryable failures are delayed with the backoff policy; permanent ones and exhausted windows go to the
//! dead-letter queue with a notification.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_core::batch::{self, PlannedRecord};
use relay_core::{BackoffPolicy, NextAttempt, RecordType};
use relay_ports::{Accept, Claim, FailureNotice, LedgerEntry, PortError, ReceivedMessage, RecordRef, RetryLater};
use servicenow_client::{CreatedRecord, Outcome, ServiceNowClient};

use crate::Ports;
use crate::breaker::{Admit, Breaker};
use crate::defaults::LONGEST_REDELAY;
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
    /// How long a claim holds an alert before another deliverer may take it over. Longer than a whole
    /// attempt (see `defaults::lease_for_attempts` / `lease_for_function`); renewed while a call is in
    /// flight.
    pub lease: Duration,
    pub ledger_retention: Duration,
    /// After an ambiguous create, how long no new create is sent (`defaults::SETTLE_AFTER_AMBIGUOUS`).
    pub settle: Duration,
    /// The realtime queue's receive limit (its redrive `maxReceiveCount`;
    /// `defaults::max_receive_count(&backoff)`). The deliverer gives an alert up itself, with a notice,
    /// `defaults::RECEIVE_LIMIT_RESERVE` receives before it.
    pub max_receives: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings::for_policy(BackoffPolicy::default())
    }
}

impl DeliverySettings {
    /// The default settings with `backoff` (and the receive limit derived from it).
    pub fn for_policy(backoff: BackoffPolicy) -> Self {
        DeliverySettings {
            backoff,
            lease: crate::defaults::lease_for_attempts(crate::defaults::SERVICENOW_TIMEOUT),
            ledger_retention: crate::defaults::LEDGER_RETENTION,
            settle: crate::defaults::SETTLE_AFTER_AMBIGUOUS,
            max_receives: crate::defaults::max_receive_count(&backoff),
        }
    }

    /// The receive count from which the deliverer gives an alert up itself (class `receive_limit`).
    pub fn give_up_at_receive(&self) -> u32 {
        self.max_receives
            .saturating_sub(crate::defaults::RECEIVE_LIMIT_RESERVE)
            .max(1)
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
    /// The instance's circuit breaker, shared by every deliverer and the flush of this process.
    breaker: Arc<Breaker>,
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

pub(crate) fn record_ref(r: CreatedRecord) -> RecordRef {
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
            breaker: Arc::new(Breaker::new(settings.backoff)),
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
            breaker: Arc::clone(&self.breaker),
        }
    }

    /// The same delivery with a fixed jitter source (tests).
    pub fn with_jitter(self, jitter: Jitter) -> Delivery {
        Delivery { jitter, ..self }
    }

    /// Create (or, after an ambiguous attempt, find) the record for `env`. Returns the outcome and whether
    /// the record was found rather than created.
    pub async fn create(&self, env: &Envelope, lookup_first: bool) -> (Outcome, bool) {
        self.create_held(env, lookup_first, None).await
    }

    /// [`Delivery::create`] under a claim: after a lookup that found nothing, the create is only sent once
    /// the claim is confirmed still held (a fenced lease renewal); a lost claim sends nothing.
    async fn create_held(&self, env: &Envelope, lookup_first: bool, held: Option<&Held>) -> (Outcome, bool) {
        let (outcome, found) = self.create_unobserved(env, lookup_first, held).await;
        self.observe(&outcome);
        (outcome, found)
    }

    async fn create_unobserved(&self, env: &Envelope, lookup_first: bool, held: Option<&Held>) -> (Outcome, bool) {
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
                if let Some(held) = held {
                    if let Some(until) = held.no_create_before_ms.filter(|t| *t > self.ports.clock.now_ms()) {
                        // An earlier insert may still commit: look up only, create after the window.
                        return (
                            Outcome::Retryable {
                                retry_after: None,
                                reason: format!(
                                    "not found yet; an earlier ambiguous create may still commit until {until} (epoch ms)"
                                ),
                            },
                            false,
                        );
                    }
                    if let Err(o) = held.confirm(self).await {
                        return (o, false);
                    }
                }
            }
            let person = match &env.item {
                Item::Alert { decision, .. } => decision.person.as_ref(),
                Item::Aggregate { record } => record.person.as_ref(),
            };
            let created = match person {
                Some(p) => match self.with_person(&client, p, env.fields()).await {
                    Ok(fields) => client.create_record(env.table(), &fields).await,
                    Err(o) => o,
                },
                None => client.create_record(env.table(), env.fields()).await,
            };
            match (&created, &env.item) {
                (Outcome::Created(rec), Item::Aggregate { record }) => attach_files(&client, record, rec).await,
                (Outcome::Created(rec), Item::Alert { decision, .. }) => {
                    attach_trend_chart(&client, &decision.correlation_id, decision.chart.as_ref(), rec).await;
                    crate::document::attach_document(&client, &decision.correlation_id, decision.document.as_ref(), rec)
                        .await
                }
                _ => {}
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

    /// Whether the instance is closed to calls until some instant (epoch ms): its circuit breaker is open
    /// (a 429 with Retry-After, or repeated 503s) or half-open with its one probe in flight. A caller that
    /// gets `Some(t)` makes no claim and no call; it delays its work until `t` plus jitter, without
    /// counting an attempt.
    pub fn closed_until(&self) -> Option<i64> {
        self.breaker.closed_until(self.ports.clock.now_ms())
    }

    /// Ask the breaker before claiming and calling (see [`crate::breaker`]).
    pub fn admit(&self) -> Admit {
        self.breaker.admit(self.ports.clock.now_ms())
    }

    /// Report what a ServiceNow call answered to the breaker. Every call the pipeline makes through
    /// [`Delivery::create`] is reported; a caller making its own calls (the flush's Batch API calls)
    /// reports them here.
    pub fn observe(&self, outcome: &Outcome) {
        self.breaker.record(outcome, self.ports.clock.now_ms());
    }

    /// A probe admitted by [`Delivery::admit`] made no call after all.
    pub fn release_probe(&self) {
        self.breaker.release_probe();
    }

    /// The delay of a message received `receive_count` times that is put back without an attempt (the
    /// breaker is open, the claim answered Busy or NotBefore, the ledger is unavailable, the handler
    /// panicked): at least `at_least` with jitter above it, and at least what an attempt at that receive
    /// count would wait, so such receives do not burn the queue's receive limit; at most
    /// [`LONGEST_REDELAY`].
    pub fn delay_without_attempt(&self, receive_count: u32, at_least: Duration) -> Duration {
        let at_least = (!at_least.is_zero()).then_some(at_least);
        self.settings
            .backoff
            .delay(receive_count.max(1), at_least, (self.jitter)())
            .min(LONGEST_REDELAY)
    }

    /// `fields` with the employee's `sys_user` in the person's fields, or a note in its note field when
    /// there is none. Answers are cached for the config's TTL; a miss is not an error. A lookup that fails
    /// now is retryable only where the table requires the person (`required`): elsewhere the record goes
    /// with a note rather than waiting.
    pub async fn with_person(
        &self,
        client: &ServiceNowClient,
        p: &relay_core::PersonLookup,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Outcome> {
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
        let mut fields = fields.clone();
        let note = match person {
            Person::Found(id) => {
                for f in &p.fields {
                    fields.insert(f.clone(), serde_json::Value::String(id.clone()));
                }
                return Ok(fields);
            }
            Person::Missing => format!(
                "no sys_user has {field} = the employee's; {} left empty",
                p.fields.join(", ")
            ),
            Person::Unavailable if p.required => {
                return Err(Outcome::Retryable {
                    retry_after: None,
                    reason: format!(
                        "the employee could not be looked up in sys_user now, and the table requires {}",
                        p.fields.join(", ")
                    ),
                });
            }
            Person::Unavailable => format!(
                "the employee could not be looked up in sys_user now; {} left empty",
                p.fields.join(", ")
            ),
        };
        if let Some(serde_json::Value::String(text)) = fields.get_mut(&p.note_field) {
            text.push_str(&format!("\n\nPerson: {note}"));
        }
        Ok(fields)
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

    /// The record of `entry` exists but the ledger did not take it (`error`): mark the entry for a lookup
    /// (best effort), so the next attempt finds the record instead of creating it again.
    pub async fn record_not_stored(&self, entry: &LedgerEntry, error: &PortError) {
        tracing::error!(alert_id = %entry.alert_id, error = %error, "record created but ledger not updated");
        let retry = RetryLater::new("ambiguous", "ledger update failed").needing_lookup(true);
        let now = self.ports.clock.now_ms();
        let _ = self
            .ports
            .ledger
            .retry_later(&entry.alert_id, entry.claim_token, &retry, now)
            .await;
    }

    /// From now until `until_ms` (epoch ms); zero when it has passed.
    pub fn until(&self, until_ms: i64) -> Duration {
        Duration::from_millis(u64::try_from(until_ms - self.ports.clock.now_ms()).unwrap_or(0))
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
            let token = self.token_for(&key, entry).await?;
            self.ports.ledger.complete(&key, token, &record, now).await?;
        }
        // one latency per alert, each from its own arrival (an aggregate of an earlier release: from its first)
        let received = match &env.item {
            Item::Aggregate { record } if !record.received_at_ms.is_empty() => record.received_at_ms.clone(),
            _ => vec![env.received_at_ms],
        };
        RecordDelivered {
            key: &env.ledger_key(),
            alert_ids: &env.alert_ids(),
            record: &record,
            attempts: entry.attempts,
            found_existing: found,
            severity: severity_of(env),
            latencies: received
                .iter()
                .map(|t| Duration::from_millis((now - t).max(0) as u64))
                .collect(),
        }
        .emit();
        Ok(())
    }

    /// The claim token to write `key` with: the caller's claim for its own key; for the members an aggregate
    /// covers (not claimed one by one) the token they carry now.
    async fn token_for(&self, key: &str, entry: &LedgerEntry) -> Result<u64, PortError> {
        if key == entry.alert_id {
            return Ok(entry.claim_token);
        }
        Ok(self.ports.ledger.get(key).await?.map_or(0, |e| e.claim_token))
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
                // After an ambiguous create, and while an earlier one's window is open, the next attempt
                // waits for the window to close (it would only look the record up before then).
                let settle_until = ambiguous
                    .then(|| now.saturating_add(self.settings.settle.as_millis() as i64))
                    .max(entry.no_create_before_ms);
                let delay = match settle_until {
                    Some(until) if until > now => delay.max(Duration::from_millis((until - now) as u64)),
                    _ => delay,
                };
                // A server's Retry-After is kept in the ledger as the instant before which no attempt may
                // start: a queue that cannot carry the delay (SQS visibility ends 12 h after the receive; a
                // re-sent message waits 15 min at most) brings the message back early, and the claim then
                // answers NotBefore instead of calling again.
                let not_before_ms = retry_after
                    .is_some()
                    .then(|| now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)));
                let retry = RetryLater {
                    no_create_before_ms: ambiguous.then_some(settle_until).flatten(),
                    not_before_ms,
                    ..RetryLater::new(class, reason.as_str()).needing_lookup(ambiguous)
                };
                if let Err(e) = self
                    .ports
                    .ledger
                    .retry_later(&key, entry.claim_token, &retry, now)
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
                if matches!(outcome, Outcome::Ambiguous { .. }) {
                    // The last attempt may have created the record: a replay must look it up first.
                    let retry = RetryLater::new(class, reason.as_str()).needing_lookup(true);
                    if let Err(e) = self
                        .ports
                        .ledger
                        .retry_later(&key, entry.claim_token, &retry, now)
                        .await
                    {
                        tracing::warn!(alert_id = %key, error = %e, "could not record the ambiguous last attempt");
                    }
                }
                let msg = format!(
                    "gave up after {} attempts over {} min; last error ({class}): {reason}",
                    entry.attempts,
                    elapsed.as_secs() / 60
                );
                self.settle_give_up(env, entry, "window_exhausted", &msg).await
            }
        }
    }

    pub(crate) async fn settle_give_up(
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
            let _ = self
                .ports
                .ledger
                .retry_later(&key, entry.claim_token, &RetryLater::new(class, error), now)
                .await;
            return false;
        }
        for id in env.covered_keys() {
            let failed = match self.token_for(&id, entry).await {
                Ok(token) => self.ports.ledger.fail(&id, token, class, error, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = failed {
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
async fn attach_member_list(client: &ServiceNowClient, record: &PlannedRecord, created: &CreatedRecord) {
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

/// Upload what a planned record carries besides its fields (an aggregate's member list, a lone alert's trend
/// chart or document file) to its newly created record.
pub async fn attach_files(client: &ServiceNowClient, record: &PlannedRecord, created: &CreatedRecord) {
    attach_member_list(client, record, created).await;
    attach_trend_chart(client, &record.correlation_id, record.chart.as_ref(), created).await;
    crate::document::attach_document(client, &record.correlation_id, record.document.as_ref(), created).await;
}

/// Upload a weekly trend chart (HR case for a productivity alert with a weekly trend; never in
/// minimal-data mode) to its newly created record, as [`crate::chart::CHART_FILE`]. Best effort like the
/// member list: a chart that cannot be drawn or uploaded is logged, and the delivery still succeeds.
async fn attach_trend_chart(
    client: &ServiceNowClient,
    correlation_id: &str,
    chart: Option<&relay_core::TrendChart>,
    created: &CreatedRecord,
) {
    let Some(chart) = chart else {
        return;
    };
    let png = match crate::chart::render_png(chart) {
        Ok(png) => png,
        Err(e) => {
            tracing::warn!(
                correlation_id = %correlation_id,
                sys_id = %created.sys_id,
                error = %e,
                "could not draw the trend chart; the record has none attached"
            );
            return;
        }
    };
    if let Err(o) = client
        .attach(
            &created.table,
            &created.sys_id,
            crate::chart::CHART_FILE,
            crate::chart::CHART_CONTENT_TYPE,
            png,
        )
        .await
    {
        tracing::warn!(
            correlation_id = %correlation_id,
            sys_id = %created.sys_id,
            error = %o,
            "could not attach the trend chart to the record"
        );
    }
}

/// A claim held by one attempt: its key and token, and whether a renewal found it taken over.
pub struct Held {
    key: String,
    token: u64,
    no_create_before_ms: Option<i64>,
    lost: AtomicBool,
}

impl Held {
    pub fn new(entry: &LedgerEntry) -> Held {
        Held {
            key: entry.alert_id.clone(),
            token: entry.claim_token,
            no_create_before_ms: entry.no_create_before_ms,
            lost: AtomicBool::new(false),
        }
    }

    /// A renewal (or the confirmation before a create) found the claim no longer ours.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Renew the lease once; false (and remembered) when the claim is no longer ours.
    async fn renew(&self, d: &Delivery) -> Result<(), PortError> {
        let lease = d.settings.lease.as_millis() as i64;
        match d
            .ports
            .ledger
            .extend(&self.key, self.token, d.ports.clock.now_ms(), lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, PortError::Stale(_) | PortError::NotFound(_)) {
                    self.lost.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }

    /// Before a create: the claim must still be ours (renewed for a whole attempt). Otherwise the create
    /// is not sent; the outcome says why (retryable: nothing was sent).
    async fn confirm(&self, d: &Delivery) -> Result<(), Outcome> {
        self.renew(d).await.map_err(|e| Outcome::Retryable {
            retry_after: None,
            reason: format!("claim not confirmed before the create: {e}"),
        })
    }
}

impl Delivery {
    /// Run `work` (an attempt's ServiceNow calls) while renewing the claim's lease every third of it, so a
    /// call slower than expected never lets a second deliverer take the alert over.
    pub async fn holding<F: Future>(&self, held: &Held, work: F) -> F::Output {
        let every = (self.settings.lease / 3).max(Duration::from_millis(100));
        let heartbeat = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = held.renew(self).await {
                    tracing::warn!(alert_id = %held.key, error = %e, "could not renew the claim");
                    if held.is_lost() {
                        // taken over: nothing left to renew; the attempt learns it from `held`
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            out = work => out,
            () = heartbeat => unreachable!("the heartbeat never ends"),
        }
    }
}

/// Whether an attempt must look the record up before creating it: after an ambiguous outcome, and on every
/// later attempt, because an earlier attempt may have died mid-call (process killed, Lambda timeout) and left
/// no outcome in the ledger at all. A first attempt never pays for the lookup — except the first attempt of
/// a replay from the dead-letter queue (the envelope carries its `dead_letter`), which always looks up: the
/// attempts before the give-up may have created the record.
pub fn must_look_up(entry: &LedgerEntry, env: &Envelope) -> bool {
    entry.needs_lookup || entry.attempts > 1 || env.dead_letter.is_some()
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
                    Err(_) => self.put_back(msg, Duration::ZERO).await,
                };
            }
        };
        let at_limit = msg.receive_count >= d.settings.give_up_at_receive();
        // Near the receive limit no call is made: the alert is given up below whatever the breaker says.
        let probe = match if at_limit { Admit::Call } else { d.admit() } {
            Admit::Wait { until_ms } => {
                return self.put_back(msg, d.until(until_ms)).await;
            }
            Admit::Probe => true,
            Admit::Call => false,
        };
        let release = |disposition: Disposition| {
            if probe {
                d.release_probe();
            }
            disposition
        };
        let entry = match d.claim(&env).await {
            Ok(Claim::Claimed(entry)) => entry,
            // settled, or a member of a sealed aggregate (delivered with its aggregate): nothing to do
            Ok(Claim::Completed(_) | Claim::Failed(_) | Claim::Aggregated(_)) => return release(Disposition::Done),
            Ok(Claim::NotBefore { until_ms }) if at_limit => {
                // not claimable before its Retry-After, but the queue will not hand the message out much
                // longer: give it up under the entry's current token
                let entry = match d.ports.ledger.get(&env.ledger_key()).await {
                    Ok(Some(entry)) => entry,
                    _ => return self.put_back(msg, d.until(until_ms)).await,
                };
                return self.give_up_at_limit(msg, &env, &entry).await;
            }
            Ok(Claim::Busy { lease_until_ms: until } | Claim::NotBefore { until_ms: until }) => {
                return release(self.put_back(msg, d.until(until)).await);
            }
            Ok(Claim::Missing) | Err(_) => {
                tracing::warn!(alert_id = %env.ledger_key(), "ledger unavailable; the message will come back");
                return release(self.put_back(msg, Duration::ZERO).await);
            }
        };
        if at_limit {
            return self.give_up_at_limit(msg, &env, &entry).await;
        }
        let held = Held::new(&entry);
        let lookup_first = must_look_up(&entry, &env);
        let (outcome, found) = d.holding(&held, d.create_held(&env, lookup_first, Some(&held))).await;
        if held.is_lost() && !matches!(outcome, Outcome::Created(_)) {
            // Another deliverer holds the alert now: it decides; nothing of this attempt is recorded.
            tracing::warn!(alert_id = %env.ledger_key(), "claim lost during the attempt; leaving the alert to its new holder");
            return self.put_back(msg, Duration::ZERO).await;
        }
        match outcome {
            Outcome::Created(rec) => match d.succeeded(&env, &entry, record_ref(rec), found).await {
                Ok(()) => Disposition::Done,
                Err(e) => {
                    d.record_not_stored(&entry, &e).await;
                    self.put_back(msg, Duration::ZERO).await
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

    /// Keep a message without an attempt: delay it at least `at_least`, jittered and no shorter than an
    /// attempt at its receive count would wait ([`Delivery::delay_without_attempt`]).
    async fn put_back(&self, msg: &ReceivedMessage, at_least: Duration) -> Disposition {
        let delay = self.delivery.delay_without_attempt(msg.receive_count, at_least);
        self.delay(msg, delay).await;
        Disposition::RetryLater
    }

    /// The message has been received so often that the queue's redrive would soon move it to the DLQ
    /// without a notice: give the alert up now, with one (class `receive_limit`).
    async fn give_up_at_limit(&self, msg: &ReceivedMessage, env: &Envelope, entry: &LedgerEntry) -> Disposition {
        let d = &self.delivery;
        let elapsed = Duration::from_millis((d.ports.clock.now_ms() - entry.first_received_at_ms).max(0) as u64);
        let last = match (&entry.last_error_class, &entry.last_error) {
            (Some(class), Some(error)) => format!("; last error ({class}): {error}"),
            _ => String::new(),
        };
        let why = format!(
            "the realtime queue handed the message out {} times (receive limit {}) after {} attempts over {} min; \
             given up before the queue's redrive would move it without a notice{last}",
            msg.receive_count,
            d.settings.max_receives,
            entry.attempts,
            elapsed.as_secs() / 60
        );
        match d.settle_give_up(env, entry, "receive_limit", &why).await {
            AfterFailure::DeadLettered => Disposition::Done,
            AfterFailure::RetryIn(delay) => {
                self.delay(msg, delay).await;
                Disposition::RetryLater
            }
        }
    }

    /// Make the message visible again after `delay`, at most [`LONGEST_REDELAY`] (what SQS's 12 h
    /// visibility limit allows; a longer wait is in the ledger as `not_before_ms`).
    async fn delay(&self, msg: &ReceivedMessage, delay: Duration) {
        if let Err(e) = self
            .delivery
            .ports
            .realtime
            .change_visibility(&msg.receipt, delay.min(LONGEST_REDELAY))
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
                    self.put_back(&m, Duration::ZERO).await
                }
            };
            out.push((m, disposition));
        }
        out
    }
}
