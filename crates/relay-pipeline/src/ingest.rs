//! ingest: verify the signature → parse + validate → route → audit → de-duplicate → enqueue.
//!
//! HTTP-agnostic: the Lambda (API Gateway) and the local server (axum) translate their requests into a
//! [`WebhookRequest`] and send back the [`Reply`].

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relay_core::alert::Body;
use relay_core::{DeliveryMode, Router};
use relay_ports::{Accept, AlertQueue, DeliveryState, LedgerEntry};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Ports;
use crate::envelope::{Envelope, Item, alert_id_of_key, alert_key};
use crate::secrets::WebhookKeys;
use crate::signature::{SignatureError, WebhookSecrets};
use crate::telemetry::{AlertAccepted, AlertRouted, TelemetryEvent, WebhookRejected};

mod event;
mod push;

/// SQS's message limit, and so the largest alert body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// An HTTP answer, independent of the web framework: a status and one JSON document.
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
            body: serde_json::to_string(body).expect("a reply body always serialises"),
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
    Secret(Arc<WebhookKeys>),
}

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// How long the ledger remembers an alert (de-duplication horizon and status lookups).
    pub ledger_retention: Duration,
    /// A cached signing secret older than this is refetched after a signature mismatch (rotation).
    pub secret_refresh_after: Duration,
    /// The networks webhooks may come from (empty: any).
    pub allowed_sources: crate::SourceAllowList,
    /// How long a lifecycle event waits for its alert to be accepted before it is answered 404.
    pub event_wait: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            ledger_retention: crate::defaults::LEDGER_RETENTION,
            secret_refresh_after: crate::defaults::SECRET_REFRESH_AFTER,
            allowed_sources: crate::SourceAllowList::default(),
            event_wait: crate::defaults::EVENT_WAIT,
        }
    }
}

/// The ingest pipeline.
pub struct Ingest {
    router: Arc<Router>,
    keys: SigningKeys,
    /// The secret a ServiceNow business rule signs its pushes with; None: the push endpoint is off.
    push_keys: Option<SigningKeys>,
    ports: Ports,
    settings: IngestSettings,
}

/// `application/json`, or any `application/<subtype>+json` type. Parameters are not looked at (RFC 9110
/// allows whitespace before their `;`, which the `mime` parser does not).
fn is_json(content_type: Option<&str>) -> bool {
    let essence = content_type.and_then(|ct| ct.split(';').next()).unwrap_or("").trim();
    essence
        .parse::<mime::Mime>()
        .is_ok_and(|m| m.type_() == mime::APPLICATION && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON)))
}

/// The ledger entry an accepted alert starts with.
pub fn new_entry(envelope: &Envelope, webhook_id: Option<&str>, retention: Duration) -> LedgerEntry {
    let (rule, severity, delivery) = match &envelope.item {
        Item::Alert { decision, .. } => (
            decision.rule.clone(),
            decision.severity.as_str().to_string(),
            decision.delivery.as_str().to_string(),
        ),
        Item::Aggregate { record } => (
            "batch".to_string(),
            String::new(),
            format!("batch of {}", record.alert_ids.len()),
        ),
        // an event's entry names the alert it is about in `rule`
        Item::Event { plan } => (
            format!("{} {}", plan.event.kind.as_str(), plan.event.alert_id),
            String::new(),
            relay_ports::EVENT_DELIVERY.to_string(),
        ),
        // a callback's entry names its type in `rule` (the alert's rule is in its body)
        // a pushed sync has no entry of its own (it reads a watch entry); named for completeness
        Item::Sync { .. } => (String::new(), String::new(), "sync".to_string()),
        Item::Callback { callback } => (
            callback.kind.as_str().to_string(),
            String::new(),
            crate::callback::CALLBACK_DELIVERY.to_string(),
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
        claim_token: 0,
        no_create_before_ms: None,
        not_before_ms: None,
        aggregate: None,
        plan: None,
        rule,
        record_type: envelope.record_type().as_str().to_string(),
        table: envelope.table().to_string(),
        severity,
        delivery,
        correlation_id: envelope.correlation_id().to_string(),
        config_hash: match &envelope.item {
            Item::Alert { decision, .. } => decision.config_hash.clone(),
            Item::Aggregate { .. } | Item::Event { .. } | Item::Callback { .. } | Item::Sync { .. } => String::new(),
        },
        record: None,
        last_error_class: None,
        last_error: None,
        expires_at_s: envelope.received_at_ms / 1000 + retention.as_secs() as i64,
    }
}

impl Ingest {
    pub fn new(ports: &Ports, router: Arc<Router>, keys: SigningKeys, settings: IngestSettings) -> Ingest {
        Ingest {
            router,
            keys,
            push_keys: None,
            ports: ports.clone(),
            settings,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The same ingest, taking pushes from ServiceNow signed with `keys` (`POST /v1/servicenow/changes`).
    pub fn with_push_keys(self, keys: Option<SigningKeys>) -> Ingest {
        Ingest {
            push_keys: keys,
            ..self
        }
    }

    fn reject(&self, status: u16, reason: &'static str, body: Value) -> Reply {
        WebhookRejected { status, reason }.emit();
        Reply::new(status, &body)
    }

    async fn verify_with(
        &self,
        keys: &SigningKeys,
        req: &WebhookRequest<'_>,
        now_s: i64,
    ) -> Result<(), SignatureError> {
        let check = |keys: &WebhookSecrets| {
            keys.verify(
                req.webhook_id,
                req.webhook_timestamp,
                req.webhook_signature,
                req.body,
                now_s,
            )
        };
        match keys {
            SigningKeys::Fixed(keys) => check(keys),
            SigningKeys::Secret(source) => {
                let keys = source.get().await.map_err(|e| {
                    tracing::error!(error = %e, "cannot load webhook signing secrets");
                    SignatureError::NoSecrets
                })?;
                match check(&keys) {
                    Err(SignatureError::NoMatch)
                        if source.refresh_if_older_than(self.settings.secret_refresh_after).await =>
                    {
                        let keys = source.get().await.map_err(|_| SignatureError::NoSecrets)?;
                        check(&keys)
                    }
                    other => other,
                }
            }
        }
    }

    /// `POST /v1/alerts`. `status_base` is the public base URL for the status link (no trailing slash).
    /// `None` when a webhook from `source` may go on to [`Ingest::accept`]; otherwise the 403 to answer
    /// (the sender allow-list, checked before the body is looked at).
    pub fn refuse_source(&self, source: Option<std::net::IpAddr>) -> Option<Reply> {
        let allowed = &self.settings.allowed_sources;
        if allowed.admits(source) {
            return None;
        }
        let from = source.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
        Some(self.reject(
            403,
            "source",
            json!({"error": format!("webhooks from {from} are not accepted: the sender allow-list is {allowed}")}),
        ))
    }

    /// The refusal of a signed request before its body is read: 413 above `max` bytes, 415 unless JSON,
    /// 401 for a signature `keys` do not verify, 503 while the secret cannot be read. None: go on.
    async fn refuse_signed(
        &self,
        req: &WebhookRequest<'_>,
        max: usize,
        keys: &SigningKeys,
        now_ms: i64,
    ) -> Option<Reply> {
        if req.body.len() > max {
            return Some(self.reject(
                413,
                "too_large",
                json!({"error": format!("body is {} bytes; the limit is {max}", req.body.len())}),
            ));
        }
        if !is_json(req.content_type) {
            return Some(self.reject(
                415,
                "not_json",
                json!({"error": format!("Content-Type must be application/json, got {:?}", req.content_type.unwrap_or(""))}),
            ));
        }
        match self.verify_with(keys, req, now_ms.div_euclid(1000)).await {
            Ok(()) => None,
            Err(SignatureError::NoSecrets) => Some(Reply::retry_later(
                &json!({"error": "signing secrets unavailable; retry later"}),
                30,
            )),
            Err(e) => Some(self.reject(401, "signature", json!({"error": format!("signature rejected: {e}")}))),
        }
    }

    pub async fn accept(&self, req: WebhookRequest<'_>, status_base: &str) -> Reply {
        let now_ms = self.ports.clock.now_ms();
        if let Some(refused) = self.refuse_signed(&req, MAX_BODY_BYTES, &self.keys, now_ms).await {
            return refused;
        }
        let alert = match Body::from_slice(req.body) {
            Ok(Body::Alert(a)) => a,
            Ok(Body::Event(event)) => return self.accept_event(event, &req, now_ms, status_base).await,
            Err(invalid) => {
                return self.reject(
                    400,
                    "invalid",
                    json!({"error": "invalid alert", "problems": invalid.problems}),
                );
            }
        };
        let decision = self.router.route_at(&alert, now_ms.div_euclid(1000));
        let envelope = Envelope::alert(decision, req.webhook_id.map(str::to_owned), now_ms);
        let Envelope {
            item: Item::Alert { decision, .. },
            ..
        } = &envelope
        else {
            unreachable!("built as an alert")
        };
        let accepted = |duplicate: bool| {
            let status_url = format!(
                "{status_base}{ALERTS_PATH}{}",
                utf8_percent_encode(&decision.alert_id, PATH_SEGMENT)
            );
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
        let entry = new_entry(&envelope, req.webhook_id, self.settings.ledger_retention);
        match self.record_entry(&entry).await {
            Err(reply) => return reply,
            Ok(true) => {
                AlertRouted {
                    decision,
                    duplicate: true,
                }
                .emit();
                return accepted(true);
            }
            Ok(false) => {}
        }
        AlertRouted {
            decision,
            duplicate: false,
        }
        .emit();
        let queue = match decision.delivery {
            DeliveryMode::Realtime => self.ports.realtime_lane(&envelope),
            DeliveryMode::Batch => &self.ports.batch,
        };
        if let Err(reply) = self.enqueue(&envelope, queue, now_ms).await {
            return reply;
        }
        AlertAccepted { decision }.emit();
        accepted(false)
    }

    /// Write a new message's ledger entry: `Ok(false)` when it is new (or a duplicate whose first enqueue
    /// was never confirmed: enqueue it again — a second copy is harmless, delivery claims the entry first),
    /// `Ok(true)` for a duplicate already queued, `Err` with the 503 when the ledger is unavailable.
    async fn record_entry(&self, entry: &LedgerEntry) -> Result<bool, Reply> {
        match self.ports.ledger.accept(entry).await {
            Err(e) => {
                tracing::error!(alert_id = %entry.alert_id, error = %e, "ledger write failed");
                Err(self.unavailable("the delivery ledger"))
            }
            Ok(Accept::Duplicate(existing)) if existing.state != DeliveryState::Accepted => Ok(true),
            Ok(_) => Ok(false),
        }
    }

    /// Put a new message on `queue` and mark its entry queued; when the send fails the entry is forgotten
    /// (the sender's retry is accepted afresh) and the answer is the 503.
    async fn enqueue(&self, envelope: &Envelope, queue: &Arc<dyn AlertQueue>, now_ms: i64) -> Result<(), Reply> {
        let key = envelope.ledger_key();
        if let Err(e) = queue.send(&envelope.to_json(), Duration::ZERO).await {
            tracing::error!(alert_id = %key, error = %e, "enqueue failed");
            if let Err(e) = self.ports.ledger.forget(&key).await {
                tracing::error!(alert_id = %key, error = %e, "could not undo the ledger entry");
            }
            return Err(self.unavailable("the queue"));
        }
        if let Err(e) = self.ports.ledger.mark_queued(&key, now_ms).await {
            // The message is on the queue; only its status lags. Delivery moves it on regardless.
            tracing::warn!(alert_id = %key, error = %e, "could not mark the message queued");
        }
        Ok(())
    }

    /// The 503 of a port that is down: nothing was accepted.
    fn unavailable(&self, what: &str) -> Reply {
        WebhookRejected {
            status: 503,
            reason: "unavailable",
        }
        .emit();
        Reply::retry_later(
            &json!({"error": format!("{what} is unavailable; the alert was NOT accepted, retry later")}),
            5,
        )
    }

    /// `GET /v1/alerts/{alert_id}`: the delivery status from the ledger.
    pub async fn status(&self, alert_id: &str) -> Reply {
        match self.ports.ledger.get(&alert_key(alert_id)).await {
            Ok(Some(e)) => Reply::new(200, &status_of(self.ports.ledger.as_ref(), &e).await),
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

/// [`status_body`] with what the sync last saw of the alert's record (`servicenow.state`, `disposition`,
/// `close_code`, `changed_by`, `synced_at`), when it has looked; a watch entry that cannot be read leaves
/// them out.
pub async fn status_of(ledger: &dyn relay_ports::Ledger, e: &LedgerEntry) -> Value {
    let mut body = status_body(e);
    let Some(record) = &e.record else { return body };
    let Ok(Some(watch)) = ledger.get(&crate::sync::watch_key(record)).await else {
        return body;
    };
    let seen = crate::sync::Observed::of(&watch);
    if let (Some(state), Some(servicenow)) = (&seen.state, body["servicenow"].as_object_mut()) {
        servicenow.insert("state".into(), json!(state));
        servicenow.insert("disposition".into(), json!(seen.disposition));
        servicenow.insert("close_code".into(), json!(seen.close_code));
        servicenow.insert("changed_by".into(), json!(seen.changed_by));
        servicenow.insert("synced_at".into(), json!(seen.synced_at_ms.and_then(rfc3339)));
    }
    body
}

/// An epoch-ms instant as RFC 3339 (UTC); None outside the representable range.
pub(crate) fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

/// The status document for one ledger entry.
pub fn status_body(e: &LedgerEntry) -> Value {
    let ts = rfc3339;
    json!({
        "alert_id": alert_id_of_key(&e.alert_id),
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
        // a member of a batch aggregate: the aggregate's key (its status is the aggregate's delivery)
        "aggregate": e.aggregate,
        // `note`: the alert is a work note on this record, which its thread's first alert opened
        "servicenow": e.record.as_ref().map(|r| json!({
            "table": r.table, "sys_id": r.sys_id, "number": r.number, "link": r.link, "note": r.note,
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
