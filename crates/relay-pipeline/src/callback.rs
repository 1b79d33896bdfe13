//! The loop back: signed callbacks to the monitoring product when the relay opens a ServiceNow record,
//! writes on it (a thread's note, an escalation, a lifecycle event's note) or moves its state (a record
//! resolved because every alert it covers ended).
//!
//! A callback is a [Standard Webhooks](https://www.standardwebhooks.com/) POST: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 over "id.timestamp.body">`, with
//! its own `whsec_` secret), and the JSON body `{type, timestamp, data}`. It travels like a record: the
//! delivery that made the change writes the callback's ledger entry (`callback:<webhook id>`) and puts
//! it on the realtime queue *before* it records its own outcome, and a deliverer claims the entry, POSTs
//! it, and retries it with the backoff policy for the retry window (dead-lettered and notified after).
//! Its webhook id is derived from what it reports, so every attempt and every path that reports the same
//! change writes the same entry: the ledger sends each change once, and a receiver that dedupes by
//! `webhook-id` (as Standard Webhooks asks) sees each change once even when an answer was lost.

use std::sync::Arc;
use std::time::Duration;

use relay_ports::RecordRef;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use servicenow_client::Outcome;
use sha2::{Digest, Sha256};

use crate::secrets::WebhookKeys;

#[cfg(feature = "testing")]
pub mod receiver;

/// What a callback's ledger key starts with.
pub const CALLBACK_PREFIX: &str = "callback:";

pub use relay_ports::CALLBACK_DELIVERY;

/// The change a callback reports (its `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallbackType {
    /// The relay opened a record for an alert (or a batch of alerts).
    #[serde(rename = "record.created")]
    RecordCreated,
    /// The relay wrote on a record: a thread's note (with its escalation), a lifecycle event's note.
    #[serde(rename = "record.updated")]
    RecordUpdated,
    /// The sync found a record's state changed: resolved, closed as a false positive, reopened, by an
    /// analyst or by the relay.
    #[serde(rename = "record.state_changed")]
    RecordStateChanged,
}

impl CallbackType {
    pub const ALL: [CallbackType; 3] = [
        CallbackType::RecordCreated,
        CallbackType::RecordUpdated,
        CallbackType::RecordStateChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallbackType::RecordCreated => "record.created",
            CallbackType::RecordUpdated => "record.updated",
            CallbackType::RecordStateChanged => "record.state_changed",
        }
    }

    /// The type named `s`; the error lists the known ones.
    pub fn parse(s: &str) -> Result<CallbackType, String> {
        CallbackType::ALL
            .into_iter()
            .find(|t| t.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown callback type {s:?}: expected one of {}",
                    CallbackType::ALL.map(CallbackType::as_str).join(", ")
                )
            })
    }
}

/// One callback on its way: what travels on the queue and is signed as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackPlan {
    /// The Standard Webhooks `webhook-id`: `msg_` and 32 hex digits of SHA-256 over what the callback
    /// reports, the same on every attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: CallbackType,
    /// The JSON body, exactly as it is signed and sent.
    pub body: String,
    /// The record the callback is about.
    pub record: RecordRef,
    pub record_type: String,
    /// The routing rule of the alert that made the change ("batch" for an aggregate).
    pub rule: String,
}

impl CallbackPlan {
    /// The callback's ledger key.
    pub fn key(&self) -> String {
        format!("{CALLBACK_PREFIX}{}", self.id)
    }
}

/// A record moved to a done state by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The state the record is in now (its table's value: `6`, `3`, …).
    pub state: String,
    /// The close code written with it, when the transition has one.
    pub close_code: Option<String>,
}

/// What a delivery did to a record, as its callbacks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The record was opened for the message's alert(s).
    Created,
    /// The alert became a note on its thread's record (`escalated`: the ServiceNow priority this note
    /// raised the record to, if it did).
    ThreadNote { escalated: Option<String> },
    /// A lifecycle event was noted on its alert's record, and perhaps moved it to a done state.
    Event {
        kind: &'static str,
        alert_id: String,
        resolved: Option<Resolved>,
    },
    /// The sync found the record's state changed from `from` (None: not seen before).
    StateChanged {
        from: Option<String>,
        observed: crate::sync::Observed,
    },
}

/// The `webhook-id` for `parts`: the same parts always give the same id.
pub fn webhook_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    format!("msg_{}", &format!("{:x}", h.finalize())[..32])
}

/// What the callbacks of one delivery report: the record, the alerts, the rule.
pub struct Subject<'a> {
    pub record: &'a RecordRef,
    /// The ledger key of the message that made the change (an alert's, an aggregate's, an event's).
    pub key: &'a str,
    pub alert_ids: Vec<String>,
    pub record_type: &'a str,
    pub rule: &'a str,
}

/// The callbacks a change makes: a created record's `record.created`; a note's or an event's
/// `record.updated`; a state change the sync found, `record.state_changed`.
///
/// Ids: `record.created` by the record (one per record, whoever reports it); `record.updated` by the
/// message that wrote the note; `record.state_changed` by the record and the ordinal of the change (the
/// watch entry counts them), so a sync repeated after a crash reports it under the same id.
pub fn plans(subject: &Subject<'_>, change: &Change, now_ms: i64) -> Vec<CallbackPlan> {
    let r = subject.record;
    let record = json!({"table": r.table, "sys_id": r.sys_id, "number": r.number, "link": r.link});
    let make = |kind: CallbackType, id: String, mut data: serde_json::Map<String, Value>| {
        data.insert("record".into(), record.clone());
        data.insert("record_type".into(), Value::String(subject.record_type.into()));
        data.insert("rule".into(), Value::String(subject.rule.into()));
        let body =
            json!({"type": kind.as_str(), "timestamp": crate::ingest::rfc3339(now_ms), "data": data}).to_string();
        CallbackPlan {
            id,
            kind,
            body,
            record: r.clone(),
            record_type: subject.record_type.into(),
            rule: subject.rule.into(),
        }
    };
    let alerts = Value::from(subject.alert_ids.clone());
    match change {
        // an Event Management event has no sys_id: its message's key names it
        Change::Created => vec![make(
            CallbackType::RecordCreated,
            webhook_id(&[
                "record.created",
                &r.table,
                if r.sys_id.is_empty() { subject.key } else { &r.sys_id },
            ]),
            serde_json::Map::from_iter([("alert_ids".into(), alerts)]),
        )],
        Change::ThreadNote { escalated } => {
            let mut data = serde_json::Map::from_iter([
                ("change".into(), Value::from("thread_note")),
                ("alert_ids".into(), alerts),
            ]);
            if let Some(p) = escalated {
                data.insert("escalated_to_priority".into(), Value::from(p.as_str()));
            }
            vec![make(
                CallbackType::RecordUpdated,
                webhook_id(&["record.updated", subject.key]),
                data,
            )]
        }
        Change::Event {
            kind,
            alert_id,
            resolved,
        } => {
            let mut data = serde_json::Map::from_iter([
                ("change".into(), Value::from("event")),
                ("event".into(), Value::from(*kind)),
                ("alert_ids".into(), Value::from(vec![alert_id.clone()])),
            ]);
            if let Some(done) = resolved {
                // the state change itself is reported by the sync, as every state change is
                data.insert("moved_to_state".into(), Value::from(done.state.as_str()));
                data.insert("close_code".into(), Value::from(done.close_code.clone()));
            }
            vec![make(
                CallbackType::RecordUpdated,
                webhook_id(&["record.updated", subject.key]),
                data,
            )]
        }
        Change::StateChanged { from, observed } => vec![make(
            CallbackType::RecordStateChanged,
            webhook_id(&[
                "record.state_changed",
                &r.table,
                &r.sys_id,
                &observed.changes.to_string(),
            ]),
            serde_json::Map::from_iter([
                ("state".into(), Value::from(observed.state.clone())),
                ("previous_state".into(), Value::from(from.clone())),
                ("close_code".into(), Value::from(observed.close_code.clone())),
                ("disposition".into(), Value::from(observed.disposition.clone())),
                ("changed_by".into(), Value::from(observed.changed_by.clone())),
                ("changed_on".into(), Value::from(observed.changed_on.clone())),
                ("alert_ids".into(), alerts),
            ]),
        )],
    }
}

/// Why a callback URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("callback URL {url:?}: {why}")]
pub struct CallbackUrlError {
    pub url: String,
    pub why: String,
}

/// A URL as logs and errors show it: without user info, and with any query (a receiver's token) hidden.
pub fn redacted(raw: &str) -> String {
    match url::Url::parse(raw.trim()) {
        Ok(mut u) => {
            let hidden = u.query().is_some();
            u.set_query(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            format!("{u}{}", if hidden { "?…" } else { "" })
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Check a callback URL: `https` unless the host is loopback, no user info, no fragment.
pub fn validate_url(raw: &str) -> Result<url::Url, CallbackUrlError> {
    let bad = |why: &str| CallbackUrlError {
        url: redacted(raw),
        why: why.into(),
    };
    let url = url::Url::parse(raw.trim()).map_err(|e| bad(&format!("not a valid URL: {e}")))?;
    let Some(loopback) = servicenow_client::is_loopback(&url) else {
        return Err(bad("no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(bad("must use https:// (plain http only for a loopback host)")),
        other => return Err(bad(&format!("scheme must be https, not {other:?}"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not contain user info (the signature authenticates the relay)",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    Ok(url)
}

/// Where callbacks go and how they are signed: the deployment's setting (`relay serve --callback-url`,
/// the functions' `CALLBACK_URL` and `CALLBACK_SECRET_ARN`).
pub struct Callbacks {
    url: url::Url,
    keys: Arc<WebhookKeys>,
    http: reqwest::Client,
    /// The types sent; the others are not even queued.
    types: Vec<CallbackType>,
}

impl Callbacks {
    /// Callbacks to `url` (checked with [`validate_url`]), signed with the secret behind `keys`, each
    /// request allowed `timeout`. Redirects are not followed (a signed body goes where it was configured
    /// to, or nowhere).
    pub fn new(url: &str, keys: WebhookKeys, timeout: Duration) -> Result<Callbacks, CallbackUrlError> {
        let url = validate_url(url)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("alert-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallbackUrlError {
                url: redacted(url.as_str()),
                why: format!("HTTP client: {e}"),
            })?;
        Ok(Callbacks {
            url,
            keys: Arc::new(keys),
            http,
            types: CallbackType::ALL.to_vec(),
        })
    }

    /// Send only these types.
    pub fn only(self, types: Vec<CallbackType>) -> Callbacks {
        Callbacks { types, ..self }
    }

    pub fn wants(&self, kind: CallbackType) -> bool {
        self.types.contains(&kind)
    }

    /// Where the callbacks go, as logs may show it ([`redacted`]).
    pub fn shown_url(&self) -> String {
        redacted(self.url.as_str())
    }

    /// POST one callback, signed at `now_s`. A 2xx is delivered (reported as the record the callback is
    /// about); 408, 429 and 5xx answers, timeouts and connection failures are retryable (a receiver
    /// dedupes a repeat by its `webhook-id`, so an answer lost in flight is no reason to stop); any other
    /// answer, a redirect included, is permanent. The receiver's body is never read.
    pub async fn send(&self, plan: &CallbackPlan, now_s: i64) -> Outcome {
        let keys = match self.keys.get().await {
            // the stack's placeholder (`{"secrets":[]}`) until the operator sets one: nothing is sent unsigned
            Ok(k) if k.is_empty() => {
                return Outcome::Retryable {
                    retry_after: None,
                    reason: "the callback signing secret holds no secret yet (docs/deploy.md)".into(),
                };
            }
            Ok(k) => k,
            Err(e) => {
                return Outcome::Retryable {
                    retry_after: None,
                    reason: format!("the callback signing secret is unavailable: {e}"),
                };
            }
        };
        let signature = keys.sign(&plan.id, now_s, plan.body.as_bytes());
        let answer = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &plan.id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", signature)
            .body(plan.body.clone())
            .send()
            .await;
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                return Outcome::Retryable {
                    retry_after: None,
                    reason: format!("the callback to {} {what}", self.url.host_str().unwrap_or("?")),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            200..=299 => crate::deliver::created_on(&plan.record),
            408 | 429 | 500..=599 => Outcome::Retryable {
                retry_after,
                reason: format!("HTTP {status} from the callback receiver"),
            },
            _ => Outcome::Permanent {
                message: format!("the callback receiver answered HTTP {status}"),
                detail: (300..400)
                    .contains(&status)
                    .then(|| "redirects are not followed: configure the final URL".to_string()),
                status,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RecordRef {
        RecordRef {
            table: "sn_si_incident".into(),
            sys_id: "abc".into(),
            number: Some("SIR0010001".into()),
            link: "https://x/sn_si_incident.do?sys_id=abc".into(),
            note: false,
        }
    }

    fn subject<'a>(record: &'a RecordRef, key: &'a str) -> Subject<'a> {
        Subject {
            record,
            key,
            alert_ids: vec!["a-1".into()],
            record_type: "security_incident",
            rule: "usb",
        }
    }

    #[test]
    fn ids_are_stable_and_name_the_change() {
        let r = record();
        let created = plans(&subject(&r, "a-1"), &Change::Created, 1_000);
        let again = plans(&subject(&r, "a-1"), &Change::Created, 99_000);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].id, again[0].id, "one record.created per record");
        assert!(created[0].id.starts_with("msg_") && created[0].id.len() == 36);
        let body: Value = serde_json::from_str(&created[0].body).unwrap();
        assert_eq!(body["type"], "record.created");
        assert_eq!(body["data"]["record"]["number"], "SIR0010001");
        assert_eq!(body["data"]["alert_ids"], json!(["a-1"]));
        assert_eq!(body["timestamp"], "1970-01-01T00:00:01Z");
        // two notes are two updates
        let n1 = plans(&subject(&r, "a-2"), &Change::ThreadNote { escalated: None }, 0);
        let n2 = plans(
            &subject(&r, "a-3"),
            &Change::ThreadNote {
                escalated: Some("2".into()),
            },
            0,
        );
        assert_ne!(n1[0].id, n2[0].id);
        let b2: Value = serde_json::from_str(&n2[0].body).unwrap();
        assert_eq!(b2["type"], "record.updated");
        assert_eq!(b2["data"]["escalated_to_priority"], "2");
    }

    #[test]
    fn an_event_is_an_update_and_each_state_change_has_its_ordinal_id() {
        let r = record();
        let resolved = |key: &str, alert: &str| {
            plans(
                &subject(&r, key),
                &Change::Event {
                    kind: "resolved",
                    alert_id: alert.into(),
                    resolved: Some(Resolved {
                        state: "3".into(),
                        close_code: Some("Investigation completed".into()),
                    }),
                },
                0,
            )
        };
        let a = resolved("event:1", "a-1");
        let b = resolved("event:2", "a-2");
        assert_eq!(a.len(), 1, "the state change is the sync's to report");
        assert_ne!(a[0].id, b[0].id, "each event's note is its own update");
        let body: Value = serde_json::from_str(&a[0].body).unwrap();
        assert_eq!(body["data"]["moved_to_state"], "3");
        let changed = |n: u32, state: &str| {
            plans(
                &subject(&r, "watch:sn_si_incident:abc"),
                &Change::StateChanged {
                    from: Some("10".into()),
                    observed: crate::sync::Observed {
                        state: Some(state.into()),
                        disposition: Some("resolved".into()),
                        close_code: Some("Investigation completed".into()),
                        changed_by: Some("analyst.jones".into()),
                        changes: n,
                        ..Default::default()
                    },
                },
                0,
            )
        };
        let first = changed(1, "3");
        assert_eq!(
            first[0].id,
            changed(1, "3")[0].id,
            "a repeated sync reports under the same id"
        );
        assert_ne!(
            first[0].id,
            changed(3, "3")[0].id,
            "resolved again after a reopen is a new change"
        );
        let body: Value = serde_json::from_str(&first[0].body).unwrap();
        assert_eq!(body["type"], "record.state_changed");
        assert_eq!(body["data"]["state"], "3");
        assert_eq!(body["data"]["previous_state"], "10");
        assert_eq!(body["data"]["changed_by"], "analyst.jones");
        assert_eq!(body["data"]["disposition"], "resolved");
    }

    #[test]
    fn urls_need_tls_off_loopback() {
        assert!(validate_url("https://monitor.example.com/hooks/servicenow?x=1").is_ok());
        assert!(validate_url("http://127.0.0.1:9000/cb").is_ok());
        let e = validate_url("http://monitor.example.com/cb").unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        assert!(
            validate_url("https://u:p@monitor.example.com/")
                .unwrap_err()
                .why
                .contains("user info")
        );
        assert!(validate_url("ftp://x/").unwrap_err().why.contains("scheme"));
        assert!(validate_url("not a url").is_err());
        // a receiver's token in the query never reaches a log or an error
        let e = validate_url("http://monitor.example.com/cb?token=s3cret").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert_eq!(
            redacted("https://u:p@m.example.com/cb?token=s3cret"),
            "https://m.example.com/cb?…"
        );
    }

    #[test]
    fn types_parse_by_name() {
        assert_eq!(CallbackType::parse("record.updated"), Ok(CallbackType::RecordUpdated));
        let e = CallbackType::parse("record.deleted").unwrap_err();
        assert!(
            e.contains("record.created, record.updated, record.state_changed"),
            "{e}"
        );
    }
}
