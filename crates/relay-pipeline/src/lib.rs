//! The three pipelines — ingest, deliver, flush — as plain async code over the ports in `relay-ports`, and
//! the one HTTP front end both modes serve.
//!
//! The Lambda functions and the local mode build different adapters, bundle them as [`Ports`], and call
//! exactly this code through the constructors [`Ingest::new`], [`Delivery::new`] and [`Flusher::new`].

use std::sync::Arc;

use relay_ports::{AlertQueue, Clock, Ledger, Notifier, SecretStore};

pub mod breaker;
pub mod callback;
pub mod chart;
pub mod concurrency;
pub mod defaults;
pub mod deliver;
pub mod envelope;
pub mod flush;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod replay;
pub mod report;
pub mod secrets;
pub mod signature;
pub mod sources;
pub mod sync;
pub mod telemetry;

pub use deliver::{AfterFailure, Deliverer, Delivery, DeliverySettings, Disposition, Jitter, random_jitter};
pub use envelope::{Envelope, Item, alert_key};
pub use flush::{FlushReport, FlushSettings, Flusher};
pub use ingest::{Ingest, IngestSettings, Reply, SigningKeys, WebhookRequest};
pub use secrets::{CachedSecret, SecretDocument, ServiceNowSettings, ServiceNowTarget, WebhookKeys};
pub use signature::WebhookSecrets;
pub use sources::{SourceAddr, SourceAllowList};

/// The adapters the pipelines run over: SQS, DynamoDB, Secrets Manager and SNS on AWS; one SQLite file,
/// a secrets file and the log locally; in-memory ones in benchmarks.
#[derive(Clone)]
pub struct Ports {
    pub ledger: Arc<dyn Ledger>,
    /// Realtime alerts, and every retry (batch records that could not be created come here too).
    pub realtime: Arc<dyn AlertQueue>,
    /// Critical realtime alerts, and their retries: handed out before any other realtime work. On AWS its own
    /// SQS queue with its own event source mapping (the realtime queue when `CRITICAL_QUEUE_URL` is unset);
    /// locally the realtime queue's critical lane (`relay_local::SqliteQueue::critical_lane`).
    pub critical: Arc<dyn AlertQueue>,
    /// Medium and low alerts waiting for the next flush.
    pub batch: Arc<dyn AlertQueue>,
    /// Where delivery puts what it gave up on.
    pub dlq: Arc<dyn AlertQueue>,
    pub secrets: Arc<dyn SecretStore>,
    pub notifier: Arc<dyn Notifier>,
    pub clock: Arc<dyn Clock>,
}

impl Ports {
    /// The queue a realtime message goes to: the critical lane for a critical alert, the realtime queue
    /// for everything else.
    pub fn realtime_lane(&self, envelope: &Envelope) -> &Arc<dyn AlertQueue> {
        if envelope.is_critical() {
            &self.critical
        } else {
            &self.realtime
        }
    }
}
