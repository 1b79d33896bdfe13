//! The three pipelines — ingest, deliver, flush — as plain async code over the ports in `relay-ports`.
//!
//! The Lambda functions and the local mode build different adapters and call exactly this code.

pub mod deliver;
pub mod envelope;
pub mod flush;
pub mod ingest;
pub mod secrets;
pub mod signature;
pub mod telemetry;

pub use deliver::{Deliverer, Delivery, DeliverySettings, Disposition, Jitter, random_jitter};
pub use envelope::{Envelope, Item};
pub use flush::{FlushReport, FlushSettings, Flusher};
pub use ingest::{Ingest, IngestSettings, Reply, SigningKeys, WebhookRequest};
pub use secrets::{CachedSecret, ServiceNowSettings, ServiceNowTarget, WebhookKeys};
pub use signature::WebhookSecrets;
pub use telemetry::Metrics;
