//! deliver: claim → (look up, when an earlier attempt was ambiguous) → create → store the record → ack;
//! retryable failures are delayed with the backoff policy; permanent ones and exhausted windows go to the
//! dead-letter queue with a notification.
//!
//! This file holds [`Delivery`] itself (its construction and what it asks the circuit breaker); the
//! submodules hold one concern each: `settings`, `claim` (claiming an alert and holding the claim),
//! `attempt` (one attempt's ServiceNow calls), `person` (the employee lookup), `attach` (files
//! uploaded to a created record), `settle` (recording a created record), `failure` (retrying or giving
//! up), `thread` (a repeat alert as a note on its thread's record) and `deliverer` (the realtime queue's
//! message loop).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_core::Severity;
use relay_ports::RecordRef;
use servicenow_client::{CreatedRecord, Outcome};

use crate::Ports;
use crate::breaker::{Admit, Breaker};
use crate::callback::Callbacks;
use crate::concurrency::{ConcurrencyLimit, Lane, Permit};
use crate::defaults::LONGEST_REDELAY;
use crate::envelope::{Envelope, Item};
use crate::secrets::ServiceNowTarget;

mod attach;
mod attempt;
mod callback;
mod claim;
mod deliverer;
mod event;
mod failure;
mod person;
mod settings;
mod settle;
mod thread;

pub use attach::{Files, attach_files};
pub use claim::{Held, must_look_up};
pub use deliverer::{Deliverer, Disposition};
pub use failure::AfterFailure;
pub use settings::{DeliverySettings, Jitter, random_jitter};
pub use thread::{MAX_GENERATIONS, Role};

use person::PersonCache;

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
    /// How many ServiceNow calls this process has in flight, shared the same way.
    limit: Arc<ConcurrencyLimit>,
    /// Where the callbacks to the monitoring product go; None: none are made.
    pub callbacks: Option<Arc<Callbacks>>,
}

pub(crate) fn record_ref(r: CreatedRecord) -> RecordRef {
    RecordRef {
        table: r.table,
        sys_id: r.sys_id,
        number: r.number,
        link: r.link,
        note: false,
    }
}

/// A field's value as text (a plain value, a reference's `value`, a number), empty when absent.
pub(crate) fn text_of(v: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("value").and_then(Value::as_str).unwrap_or_default().to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// One field of a record the relay made, read back now; None when the record can no longer be read.
pub(crate) async fn field_of(
    client: &servicenow_client::ServiceNowClient,
    record: &RecordRef,
    field: &str,
) -> Result<Option<String>, Outcome> {
    let rows = client.read_records(&record.table, &[&record.sys_id], &[field]).await?;
    Ok(rows.first().map(|r| text_of(r.get(field))))
}

/// A record the pipeline already knows (a thread's, an alert's) as the outcome of an attempt that ends on it.
pub(crate) fn created_on(r: &RecordRef) -> Outcome {
    Outcome::Created(CreatedRecord {
        table: r.table.clone(),
        sys_id: r.sys_id.clone(),
        number: r.number.clone(),
        link: r.link.clone(),
    })
}

/// The lane an envelope's ServiceNow calls wait in: critical alerts, the other realtime alerts, batch work
/// (aggregates and the lone medium/low alerts a flush sends).
fn lane_of(env: &Envelope) -> Lane {
    match &env.item {
        Item::Alert { decision, .. } => match decision.severity {
            Severity::Critical => Lane::Critical,
            Severity::High => Lane::Realtime,
            Severity::Medium | Severity::Low => Lane::Batch,
        },
        Item::Aggregate { .. } => Lane::Batch,
        Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => Lane::Realtime,
    }
}

fn severity_of(env: &Envelope) -> &'static str {
    match &env.item {
        Item::Alert { decision, .. } => decision.severity.as_str(),
        Item::Aggregate { .. } => "batch",
        Item::Event { .. } => "event",
        Item::Callback { .. } => "callback",
        Item::Sync { .. } => "sync",
    }
}

impl Delivery {
    /// A delivery over `ports`, with random jitter.
    pub fn new(ports: &Ports, servicenow: ServiceNowTarget, settings: DeliverySettings) -> Delivery {
        Delivery {
            ports: ports.clone(),
            servicenow: Arc::new(servicenow),
            breaker: Arc::new(if settings.breaker {
                Breaker::new(settings.backoff)
            } else {
                Breaker::disabled()
            }),
            limit: Arc::new(ConcurrencyLimit::new(settings.concurrency)),
            settings,
            jitter: random_jitter(),
            people: Arc::default(),
            callbacks: None,
        }
    }

    /// The same delivery, making callbacks to the monitoring product.
    pub fn with_callbacks(self, callbacks: Option<Callbacks>) -> Delivery {
        Delivery {
            callbacks: callbacks.map(Arc::new),
            ..self
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
            limit: Arc::clone(&self.limit),
            callbacks: self.callbacks.clone(),
        }
    }

    /// The same delivery with a fixed jitter source (tests).
    pub fn with_jitter(self, jitter: Jitter) -> Delivery {
        Delivery { jitter, ..self }
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

    /// Wait for a slot to call ServiceNow for `lane` ([`crate::concurrency`]); report the answer on the
    /// permit.
    pub async fn slot(&self, lane: Lane) -> Permit {
        self.limit.acquire(lane).await
    }

    /// The process's ServiceNow concurrency limit.
    pub fn concurrency(&self) -> &ConcurrencyLimit {
        &self.limit
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

    /// From now until `until_ms` (epoch ms); zero when it has passed.
    pub fn until(&self, until_ms: i64) -> Duration {
        Duration::from_millis(u64::try_from(until_ms - self.ports.clock.now_ms()).unwrap_or(0))
    }
}
