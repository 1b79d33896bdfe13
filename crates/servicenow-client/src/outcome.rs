//! What a call to ServiceNow came to, and how HTTP answers are classified.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A record that exists in ServiceNow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRecord {
    pub table: String,
    pub sys_id: String,
    /// The record number (INC0010001…); `None` for tables without numbering.
    pub number: Option<String>,
    /// `{instance}/nav_to.do?uri={table}.do?sys_id={sys_id}`.
    pub link: String,
}

impl CreatedRecord {
    pub fn new(instance_url: &str, table: &str, sys_id: &str, number: Option<String>) -> Self {
        CreatedRecord {
            table: table.to_string(),
            sys_id: sys_id.to_string(),
            number: number.filter(|n| !n.is_empty()),
            link: format!("{instance_url}/nav_to.do?uri={table}.do?sys_id={sys_id}"),
        }
    }
}

/// The classified result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The record exists.
    Created(CreatedRecord),
    /// Nothing happened (or nothing harmful): try again later, not before `retry_after` when given.
    Retryable {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// The request was sent but no usable answer came back: the write may or may not have happened.
    /// Look the record up (by correlation id) before trying again.
    Ambiguous { reason: String },
    /// Authentication failed even with fresh credentials/token.
    Auth { message: String },
    /// ServiceNow refused the request; repeating it will not help. `message`/`detail` are ServiceNow's.
    Permanent {
        message: String,
        detail: Option<String>,
        status: u16,
    },
}

impl Outcome {
    /// `created`, `retryable`, `ambiguous`, `auth` or `permanent`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Created(_) => "created",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Ambiguous { .. } => "ambiguous",
            Outcome::Auth { .. } => "auth",
            Outcome::Permanent { .. } => "permanent",
        }
    }

    /// A 503 without an answer body of use: the instance (or its load balancer) is unavailable.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Outcome::Retryable { reason, .. } if reason.starts_with("HTTP 503"))
    }

    /// The instance pushed back: a 429 or a 503, or any retryable answer with a `Retry-After`.
    pub fn is_backpressure(&self) -> bool {
        match self {
            Outcome::Retryable { retry_after, reason } => {
                retry_after.is_some() || reason.starts_with("HTTP 429") || self.is_unavailable()
            }
            _ => false,
        }
    }

    pub(crate) fn retryable(reason: impl Into<String>) -> Self {
        Outcome::Retryable {
            retry_after: None,
            reason: reason.into(),
        }
    }

    /// A refusal decided before any call (bad input, a missing prerequisite): permanent, with no HTTP status.
    pub fn permanent_local(message: impl Into<String>) -> Self {
        Outcome::Permanent {
            message: message.into(),
            detail: None,
            status: 0,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Created(r) => {
                write!(f, "created {} {}", r.table, r.number.as_deref().unwrap_or(&r.sys_id))
            }
            Outcome::Retryable {
                retry_after: Some(d),
                reason,
            } => {
                write!(f, "retryable (after {}s): {reason}", d.as_secs())
            }
            Outcome::Retryable {
                retry_after: None,
                reason,
            } => write!(f, "retryable: {reason}"),
            Outcome::Ambiguous { reason } => write!(f, "ambiguous: {reason}"),
            Outcome::Auth { message } => write!(f, "authentication failed: {message}"),
            Outcome::Permanent {
                message,
                detail: Some(d),
                status,
            } => {
                write!(f, "rejected (HTTP {status}): {message}: {d}")
            }
            Outcome::Permanent {
                message,
                detail: None,
                status,
            } => {
                write!(f, "rejected (HTTP {status}): {message}")
            }
        }
    }
}

/// Whether the request could have changed anything in the instance. A read whose answer got lost is
/// simply retryable; a write whose answer got lost is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Read,
    Write,
}

impl Effect {
    pub(crate) fn lost_answer(self, reason: String) -> Outcome {
        match self {
            Effect::Write => Outcome::Ambiguous { reason },
            Effect::Read => Outcome::retryable(reason),
        }
    }
}

/// An HTTP answer read in full.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// ServiceNow's error envelope `{"error":{"message","detail"},"status":"failure"}`.
pub(crate) fn error_envelope(body: &[u8]) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    match err {
        Value::Object(o) => {
            let message = o.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
            let detail = o
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string)
                .filter(|d| !d.is_empty());
            Some((message, detail))
        }
        // OAuth style: {"error":"server_error","error_description":"access_denied"}
        Value::String(s) => {
            let detail = v.get("error_description").and_then(Value::as_str).map(str::to_string);
            Some((s.clone(), detail))
        }
        _ => None,
    }
}

/// When to try again, from `Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (unix seconds).
pub(crate) fn retry_after(headers: &HeaderMap, now_unix: u64) -> Option<Duration> {
    if let Some(v) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(t) = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822) {
            let at = t.unix_timestamp().max(0) as u64;
            return Some(Duration::from_secs(at.saturating_sub(now_unix)));
        }
    }
    if let Some(reset) = headers
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(reset.saturating_sub(now_unix)));
    }
    None
}

fn looks_like_json(resp: &RawResponse) -> bool {
    let ct_json = resp
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let first = resp.body.iter().find(|b| !b.is_ascii_whitespace());
    ct_json || matches!(first, Some(b'{') | Some(b'['))
}

/// Classify an answer: `Ok(result)` for a 2xx with a JSON `result`, otherwise the outcome.
pub(crate) fn result_of(resp: &RawResponse, effect: Effect, now_unix: u64) -> Result<Value, Outcome> {
    let status = resp.status;
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<Value>(&resp.body) {
            Ok(mut v) => match v.get_mut("result") {
                Some(r) => Ok(r.take()),
                None if status == 201 => {
                    Err(effect.lost_answer(format!("HTTP {status} without a JSON result: the record may exist")))
                }
                None => Err(Outcome::retryable(format!(
                    "HTTP {status} without a JSON result: instance unavailable"
                ))),
            },
            Err(e) if looks_like_json(resp) || status == 201 => {
                Err(effect.lost_answer(format!("HTTP {status} with an unreadable JSON body ({e})")))
            }
            Err(_) => Err(Outcome::retryable(format!(
                "HTTP {status} answered with a non-JSON page: instance unavailable (hibernating?)"
            ))),
        };
    }
    let envelope = error_envelope(&resp.body);
    let wait = retry_after(&resp.headers, now_unix);
    match status {
        401 => Err(Outcome::Auth {
            message: envelope
                .map(|(m, d)| join(&m, d.as_deref()))
                .unwrap_or_else(|| "HTTP 401 User Not Authenticated".into()),
        }),
        408 | 429 => Err(Outcome::Retryable {
            retry_after: wait,
            reason: envelope
                .map(|(m, d)| join(&m, d.as_deref()))
                .unwrap_or_else(|| format!("HTTP {status}")),
        }),
        500..=599 => {
            let text = envelope
                .as_ref()
                .map(|(m, d)| join(m, d.as_deref()))
                .unwrap_or_default();
            if text.to_ascii_lowercase().contains("transaction cancelled") {
                Err(effect.lost_answer(format!("HTTP {status} {text}: the write may have committed")))
            } else if text.is_empty() {
                Err(Outcome::Retryable {
                    retry_after: wait,
                    reason: format!("HTTP {status}"),
                })
            } else {
                Err(Outcome::Retryable {
                    retry_after: wait,
                    reason: format!("HTTP {status} {text}"),
                })
            }
        }
        300..=399 => Err(Outcome::retryable(format!(
            "HTTP {status} redirect: instance unavailable or instance_url wrong"
        ))),
        _ => {
            let (message, detail) = envelope.unwrap_or_else(|| {
                (
                    reqwest::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("HTTP error")
                        .to_string(),
                    None,
                )
            });
            Err(Outcome::Permanent {
                message,
                detail,
                status,
            })
        }
    }
}

fn join(message: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) if !message.is_empty() => format!("{message}: {d}"),
        Some(d) => d.to_string(),
        None => message.to_string(),
    }
}

/// Turn a create answer into `Created`, or the outcome it really is.
pub(crate) fn created_from(resp: &RawResponse, instance_url: &str, table: &str, now_unix: u64) -> Outcome {
    let result = match result_of(resp, Effect::Write, now_unix) {
        Ok(r) => r,
        Err(o) => return o,
    };
    match record_from(&result, instance_url, table) {
        Some(r) => Outcome::Created(r),
        None => Outcome::Ambiguous {
            reason: format!("HTTP {} result has no sys_id: the record may exist", resp.status),
        },
    }
}

pub(crate) fn record_from(result: &Value, instance_url: &str, table: &str) -> Option<CreatedRecord> {
    let sys_id = field_str(result.get("sys_id")?)?;
    if crate::config::check_sys_id(&sys_id).is_err() {
        return None;
    }
    let number = result.get("number").and_then(field_str);
    Some(CreatedRecord::new(instance_url, table, &sys_id, number))
}

/// The rows of a list answer (`what` names the request in the error).
pub(crate) fn rows_of(result: Value, what: &str) -> Result<Vec<Value>, Outcome> {
    match result {
        Value::Array(rows) => Ok(rows),
        _ => Err(Outcome::retryable(format!("{what} answer's result is not a list"))),
    }
}

/// A field value: a string, or a reference `{"value": ...}`.
pub(crate) fn field_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("value").and_then(Value::as_str).map(str::to_string),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{CONTENT_TYPE, HeaderValue};

    const I: &str = "https://x.service-now.com";

    fn resp(status: u16, ct: &str, body: &str, extra: &[(&'static str, &str)]) -> RawResponse {
        let mut headers = HeaderMap::new();
        if !ct.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        for (k, v) in extra {
            headers.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        RawResponse {
            status,
            headers,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    fn create(r: &RawResponse) -> Outcome {
        created_from(r, I, "incident", 1_000)
    }

    #[test]
    fn created_201_with_result() {
        let r = resp(
            201,
            "application/json",
            r#"{"result":{"sys_id":"abc123","number":"INC0010001"}}"#,
            &[],
        );
        let Outcome::Created(rec) = create(&r) else { panic!() };
        assert_eq!(rec.number.as_deref(), Some("INC0010001"));
        assert_eq!(
            rec.link,
            "https://x.service-now.com/nav_to.do?uri=incident.do?sys_id=abc123"
        );
        let r = resp(
            201,
            "application/json",
            r#"{"result":{"sys_id":"abc123","number":""}}"#,
            &[],
        );
        let Outcome::Created(rec) = create(&r) else { panic!() };
        assert_eq!(rec.number, None);
    }

    #[test]
    fn hibernating_html_200_is_retryable() {
        let r = resp(
            200,
            "text/html",
            "<html><body>Your instance is hibernating</body></html>",
            &[],
        );
        assert_eq!(create(&r).class(), "retryable");
        let r = resp(200, "application/json", r#"{"status":"ok"}"#, &[]);
        assert_eq!(create(&r).class(), "retryable");
        let r = resp(200, "", "", &[]);
        assert_eq!(create(&r).class(), "retryable");
    }

    #[test]
    fn unusable_answers_to_a_write_are_ambiguous() {
        for r in [
            resp(201, "application/json", r#"{"result":{"sys_id":"ab"#, &[]),
            resp(200, "application/json", "not json", &[]),
            resp(200, "", r#"{"result": "#, &[]),
            resp(201, "text/html", "<html>", &[]),
            resp(201, "application/json", r#"{"result":{"number":"INC1"}}"#, &[]),
            resp(201, "application/json", r#"{"other":1}"#, &[]),
            resp(
                500,
                "application/json",
                r#"{"error":{"message":"Transaction cancelled: maximum execution time exceeded","detail":null},"status":"failure"}"#,
                &[],
            ),
        ] {
            assert_eq!(create(&r).class(), "ambiguous", "{r:?}");
        }
        // The same answers to a read are plain retryable.
        let r = resp(200, "application/json", r#"{"result":[{"sys_"#, &[]);
        assert_eq!(result_of(&r, Effect::Read, 0).unwrap_err().class(), "retryable");
    }

    #[test]
    fn server_errors_and_rate_limits_are_retryable_with_wait() {
        let r = resp(503, "text/html", "<html>down</html>", &[("retry-after", "7")]);
        assert_eq!(
            create(&r),
            Outcome::Retryable {
                retry_after: Some(Duration::from_secs(7)),
                reason: "HTTP 503".into()
            }
        );
        let r = resp(
            429,
            "application/json",
            r#"{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 10 requests per hour for Table API exceeded"},"status":"failure"}"#,
            &[("retry-after", "30"), ("x-ratelimit-reset", "5000")],
        );
        let Outcome::Retryable { retry_after, reason } = create(&r) else {
            panic!()
        };
        assert_eq!(retry_after, Some(Duration::from_secs(30)));
        assert!(reason.contains("Rate limit exceeded"));
        // Only the reset header: wait until then.
        let r = resp(429, "", "", &[("x-ratelimit-reset", "1045")]);
        assert_eq!(
            create(&r),
            Outcome::Retryable {
                retry_after: Some(Duration::from_secs(45)),
                reason: "HTTP 429".into()
            }
        );
        // HTTP date form.
        let r = resp(503, "", "", &[("retry-after", "Thu, 01 Jan 1970 00:17:00 GMT")]);
        let Outcome::Retryable { retry_after, .. } = create(&r) else {
            panic!()
        };
        assert_eq!(retry_after, Some(Duration::from_secs(20)));
        let r = resp(
            500,
            "application/json",
            r#"{"error":{"message":"Internal error","detail":null},"status":"failure"}"#,
            &[],
        );
        assert_eq!(create(&r).class(), "retryable");
        let r = resp(502, "", "", &[]);
        assert_eq!(
            create(&r),
            Outcome::Retryable {
                retry_after: None,
                reason: "HTTP 502".into()
            }
        );
    }

    #[test]
    fn client_errors_are_permanent_with_servicenow_message() {
        let r = resp(
            403,
            "application/json",
            r#"{"error":{"message":"Operation Failed","detail":"ACL Exception Insert Failed due to security constraints"},"status":"failure"}"#,
            &[],
        );
        assert_eq!(
            create(&r),
            Outcome::Permanent {
                message: "Operation Failed".into(),
                detail: Some("ACL Exception Insert Failed due to security constraints".into()),
                status: 403
            }
        );
        let r = resp(
            400,
            "application/json",
            r#"{"error":{"message":"Invalid table nope","detail":null},"status":"failure"}"#,
            &[],
        );
        assert_eq!(
            create(&r),
            Outcome::Permanent {
                message: "Invalid table nope".into(),
                detail: None,
                status: 400
            }
        );
        let r = resp(404, "text/html", "<html>", &[]);
        assert_eq!(
            create(&r),
            Outcome::Permanent {
                message: "Not Found".into(),
                detail: None,
                status: 404
            }
        );
        let r = resp(
            401,
            "application/json",
            r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#,
            &[],
        );
        assert_eq!(
            create(&r),
            Outcome::Auth {
                message: "User Not Authenticated: Required to provide Auth information".into()
            }
        );
        let r = resp(302, "", "", &[]);
        assert_eq!(create(&r).class(), "retryable");
    }

    #[test]
    fn class_names() {
        assert_eq!(Outcome::Ambiguous { reason: String::new() }.class(), "ambiguous");
        assert_eq!(Outcome::Auth { message: String::new() }.class(), "auth");
        assert_eq!(Outcome::permanent_local("x").class(), "permanent");
        assert_eq!(Outcome::retryable("x").class(), "retryable");
    }
}
