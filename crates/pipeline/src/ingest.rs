//! ingest: verify the signature → parse + validate → route → audit → de-duplicate → enqueue.
//!
//! HTTP-agnostic: the Lambda (API Gateway) and the local server (axum) translate their requests into a
//! [`WebhookRequest`] and send back the [`Reply`].

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relay_core::{Alert, DeliveryMode, Router};
use relay_ports::{Accept, AlertQueue, Clock, DeliveryState, Ledger, LedgerEntry};
use serde::Serialize;
use serde_json::{Value, json};

use crate::envelope::Envelope;
use crate::secrets::WebhookKeys;
use crate::signature::{SignatureError, WebhookSecrets};
use crate::telemetry::{Metrics, audit_routed};

/// SQS's message limit, and so the largest alert body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// An HTTP answer, independent of the web framework. The body is JSON text, written once here so that
/// neither web framework re-serialises a `Value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// The response body: one JSON document.
    pub body: String,
    /// `Retry-After` seconds for 503s.
    pub retry_after: Option<u64>,
}

impl Reply {
    fn new(status: u16, body: &impl Serialize) -> Reply {
        Reply {
            status,
            body: sonic_rs::to_string(body).expect("a reply body always serialises"),
            retry_after: None,
        }
    }

    fn retry_later(body: &impl Serialize, seconds: u64) -> Reply {
        Reply {
            retry_after: Some(seconds),
            ..Reply::new(503, body)
        }
    }

    /// The body parsed back into a JSON value (for callers that inspect it).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a reply body is one JSON document")
    }
}

/// The 202 answer to an accepted (or already accepted) alert.
#[derive(Serialize)]
struct Accepted<'a> {
    alert_id: &'a str,
    status_url: &'a str,
    duplicate: bool,
    delivery: &'static str,
}

/// The parts of a webhook POST the pipeline reads.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub content_type: Option<&'a str>,
    pub webhook_id: Option<&'a str>,
    pub webhook_timestamp: Option<&'a str>,
    pub webhook_signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Where signing secrets come from: fixed (tests, benchmarks) or a cached secret (rotation-aware).
pub enum SigningKeys {
    Fixed(WebhookSecrets),
    Secret(WebhookKeys),
}

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// How long the ledger remembers an alert (de-duplication horizon and status lookups).
    pub ledger_retention: Duration,
    /// A cached signing secret older than this is refetched after a signature mismatch (rotation).
    pub secret_refresh_after: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            ledger_retention: Duration::from_secs(30 * 24 * 3600),
            secret_refresh_after: Duration::from_secs(60),
        }
    }
}

/// The ingest pipeline.
pub struct Ingest {
    pub router: Arc<Router>,
    pub keys: SigningKeys,
    pub ledger: Arc<dyn Ledger>,
    pub realtime: Arc<dyn AlertQueue>,
    pub batch: Arc<dyn AlertQueue>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub settings: IngestSettings,
}

fn is_json(content_type: Option<&str>) -> bool {
    // compared case-insensitively in place: no lower-cased copy per request
    const APPLICATION: &[u8] = b"application/";
    const SUFFIX: &[u8] = b"+json";
    content_type.is_some_and(|ct| {
        let base = ct.split(';').next().unwrap_or("").trim().as_bytes();
        base.eq_ignore_ascii_case(b"application/json")
            || (base.len() > APPLICATION.len() + SUFFIX.len()
                && base[..APPLICATION.len()].eq_ignore_ascii_case(APPLICATION)
                && base[base.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
    })
}

/// The ledger entry an accepted alert starts with.
pub fn new_entry(envelope: &Envelope, webhook_id: Option<&str>, retention: Duration) -> LedgerEntry {
    let (rule, severity, delivery) = match &envelope.item {
        crate::envelope::Item::Alert { decision, .. } => (
            decision.rule.clone(),
            decision.severity.as_str().to_string(),
            decision.delivery.as_str().to_string(),
        ),
        crate::envelope::Item::Aggregate { record } => (
            "batch".to_string(),
            String::new(),
            format!("batch of {}", record.alert_ids.len()),
        ),
    };
    LedgerEntry {
        alert_id: envelope.ledger_key(),
        webhook_id: webhook_id.map(str::to_owned),
        state: DeliveryState::Accepted,
        attempts: 0,
        first_received_at_ms: envelope.received_at_ms,
        updated_at_ms: envelope.received_at_ms,
        lease_until_ms: None,
        needs_lookup: false,
        rule,
        record_type: envelope.record_type().as_str().to_string(),
        table: envelope.table().to_string(),
        severity,
        delivery,
        correlation_id: envelope.correlation_id().to_string(),
        config_hash: match &envelope.item {
            crate::envelope::Item::Alert { decision, .. } => decision.config_hash.clone(),
            crate::envelope::Item::Aggregate { .. } => String::new(),
        },
        record: None,
        last_error_class: None,
        last_error: None,
        expires_at_s: envelope.received_at_ms / 1000 + retention.as_secs() as i64,
    }
}

impl Ingest {
    fn reject(&self, status: u16, reason: &str, body: Value) -> Reply {
        self.metrics.count("AlertsRejected", &[("Reason", reason)]);
        tracing::info!(status, reason, "webhook rejected");
        Reply::new(status, &body)
    }

    async fn verify(&self, req: &WebhookRequest<'_>, now_s: i64) -> Result<(), SignatureError> {
        let check = |keys: &WebhookSecrets| {
            keys.verify(
                req.webhook_id,
                req.webhook_timestamp,
                req.webhook_signature,
                req.body,
                now_s,
            )
        };
        match &self.keys {
            SigningKeys::Fixed(keys) => check(keys),
            SigningKeys::Secret(source) => {
                let keys = source.current().await.map_err(|e| {
                    tracing::error!(error = %e, "cannot load webhook signing secrets");
                    SignatureError::NoSecrets
                })?;
                match check(&keys) {
                    Err(SignatureError::NoMatch)
                        if source.refresh_if_older_than(self.settings.secret_refresh_after).await =>
                    {
                        let keys = source.current().await.map_err(|_| SignatureError::NoSecrets)?;
                        check(&keys)
                    }
                    other => other,
                }
            }
        }
    }

    /// `POST /v1/alerts`. `status_base` is the public base URL for the status link (no trailing slash).
    pub async fn accept(&self, req: WebhookRequest<'_>, status_base: &str) -> Reply {
        if req.body.len() > MAX_BODY_BYTES {
            return self.reject(
                413,
                "too_large",
                json!({"error": format!("body is {} bytes; the limit is {MAX_BODY_BYTES}", req.body.len())}),
            );
        }
        if !is_json(req.content_type) {
            return self.reject(
                415,
                "not_json",
                json!({"error": format!("Content-Type must be application/json, got {:?}", req.content_type.unwrap_or(""))}),
            );
        }
        let now_ms = self.clock.now_ms();
        if let Err(e) = self.verify(&req, now_ms.div_euclid(1000)).await {
            if e == SignatureError::NoSecrets {
                return Reply::retry_later(&json!({"error": "signing secrets unavailable; retry later"}), 30);
            }
            return self.reject(401, "signature", json!({"error": format!("signature rejected: {e}")}));
        }
        let alert = match Alert::from_slice(req.body) {
            Ok(a) => a,
            Err(invalid) => {
                return self.reject(
                    400,
                    "invalid",
                    json!({"error": "invalid alert", "problems": invalid.problems}),
                );
            }
        };
        let decision = self.router.route(&alert);
        let envelope = Envelope::alert(decision, req.webhook_id.map(str::to_owned), now_ms);
        let Envelope {
            item: crate::envelope::Item::Alert { decision, .. },
            ..
        } = &envelope
        else {
            unreachable!("built as an alert")
        };
        let accepted = |duplicate: bool| {
            let mut status_url = String::with_capacity(status_base.len() + ALERTS_PATH.len() + decision.alert_id.len());
            status_url.push_str(status_base);
            status_url.push_str(ALERTS_PATH);
            status_url.extend(utf8_percent_encode(&decision.alert_id, PATH_SEGMENT));
            Reply::new(
                202,
                &Accepted {
                    alert_id: &decision.alert_id,
                    status_url: &status_url,
                    duplicate,
                    delivery: decision.delivery.as_str(),
                },
            )
        };
        let unavailable = |what: &str| {
            Reply::retry_later(
                &json!({"error": format!("{what} is unavailable; the alert was NOT accepted, retry later")}),
                5,
            )
        };

        let entry = new_entry(&envelope, req.webhook_id, self.settings.ledger_retention);
        match self.ledger.accept(&entry).await {
            Err(e) => {
                tracing::error!(alert_id = %decision.alert_id, error = %e, "ledger write failed");
                self.metrics.count("AlertsRejected", &[("Reason", "unavailable")]);
                return unavailable("the delivery ledger");
            }
            Ok(Accept::Duplicate(existing)) if existing.state != DeliveryState::Accepted => {
                audit_routed(decision, true);
                self.metrics
                    .count("AlertsDuplicate", &[("Severity", decision.severity.as_str())]);
                return accepted(true);
            }
            // New, or a duplicate whose first enqueue was never confirmed: (re-)enqueue. A second copy on
            // the queue is harmless: delivery claims the alert in the ledger first.
            Ok(_) => {}
        }
        audit_routed(decision, false);
        let queue = match decision.delivery {
            DeliveryMode::Realtime => &self.realtime,
            DeliveryMode::Batch => &self.batch,
        };
        if let Err(e) = queue.send(&envelope.to_json(), Duration::ZERO).await {
            tracing::error!(alert_id = %decision.alert_id, error = %e, "enqueue failed");
            if let Err(e) = self.ledger.forget(&decision.alert_id).await {
                tracing::error!(alert_id = %decision.alert_id, error = %e, "could not undo the ledger entry");
            }
            self.metrics.count("AlertsRejected", &[("Reason", "unavailable")]);
            return unavailable("the queue");
        }
        if let Err(e) = self.ledger.mark_queued(&decision.alert_id, now_ms).await {
            // The alert is on the queue; only its status lags. Delivery moves it on regardless.
            tracing::warn!(alert_id = %decision.alert_id, error = %e, "could not mark the alert queued");
        }
        self.metrics.count(
            "AlertsAccepted",
            &[
                ("Severity", decision.severity.as_str()),
                ("AlertType", decision.alert_type.as_str()),
            ],
        );
        accepted(false)
    }

    /// `GET /v1/alerts/{alert_id}`: the delivery status from the ledger.
    pub async fn status(&self, alert_id: &str) -> Reply {
        match self.ledger.get(alert_id).await {
            Ok(Some(e)) => Reply::new(200, &status_body(&e)),
            Ok(None) => Reply::new(
                404,
                &json!({"error": format!("no alert with id {alert_id:?} is known")}),
            ),
            Err(e) => {
                tracing::error!(error = %e, "ledger read failed");
                Reply::retry_later(&json!({"error": "the delivery ledger is unavailable"}), 5)
            }
        }
    }
}

/// The status document for one ledger entry.
pub fn status_body(e: &LedgerEntry) -> Value {
    let ts = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    };
    json!({
        "alert_id": e.alert_id,
        "state": e.state.as_str(),
        "attempts": e.attempts,
        "first_received_at": ts(e.first_received_at_ms),
        "updated_at": ts(e.updated_at_ms),
        "rule": e.rule,
        "record_type": e.record_type,
        "severity": e.severity,
        "delivery": e.delivery,
        "correlation_id": e.correlation_id,
        "config_hash": e.config_hash,
        "last_error_class": e.last_error_class,
        "last_error": e.last_error,
        "servicenow": e.record.as_ref().map(|r| json!({
            "table": r.table, "sys_id": r.sys_id, "number": r.number, "link": r.link,
        })).unwrap_or_else(|| json!({"table": e.table})),
    })
}

/// The status route's path, up to the alert id.
const ALERTS_PATH: &str = "/v1/alerts/";

/// What the alert id in a status link escapes: every byte but RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/vnd.emonitor+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
        assert!(!is_json(Some("application/+json")), "no subtype before +json");
        assert!(!is_json(Some("text/json")));
        assert!(!is_json(Some("application/jsonp")));
        assert!(is_json(Some("  APPLICATION/X-Thing+JSON ; q=1")));
    }

    #[test]
    fn status_urls_are_encoded() {
        let encoded = |s: &str| utf8_percent_encode(s, PATH_SEGMENT).to_string();
        assert_eq!(encoded("a b/c"), "a%20b%2Fc");
        assert_eq!(encoded("emon-1.x_y~"), "emon-1.x_y~");
        assert_eq!(encoded("é?#%"), "%C3%A9%3F%23%25");
    }
}
