//! Replies in ServiceNow's shapes: the JSON envelope, the error envelope and the canned errors.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::store::Shared;

pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub content_type: &'static str,
    pub user: Option<String>,
    /// How long the transaction keeps running after its work is done before it answers (a batch's items,
    /// one after another); the request's own latency comes on top.
    pub hold: Duration,
}

impl Reply {
    pub fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
    pub fn with_user(mut self, user: &str) -> Reply {
        self.user = Some(user.to_string());
        self
    }
}

const JSON: &str = "application/json;charset=UTF-8";

pub fn json_reply(status: StatusCode, value: &Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Bytes::from(serde_json::to_vec(value).expect("serialisable")),
        content_type: JSON,
        user: None,
        hold: Duration::ZERO,
    }
}

pub fn empty_reply(status: StatusCode) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Bytes::new(),
        content_type: JSON,
        user: None,
        hold: Duration::ZERO,
    }
}

pub fn error_reply(status: StatusCode, message: &str, detail: Option<&str>) -> Reply {
    json_reply(
        status,
        &json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
    )
}

pub fn unauthenticated_reply() -> Reply {
    error_reply(
        StatusCode::UNAUTHORIZED,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    )
    .header("www-authenticate", "BASIC realm=\"Service-now\"")
}

pub fn server_error_reply(status: u16) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Server Error");
    error_reply(status, reason, Some("Injected server error"))
}

pub fn rate_limited_reply(
    _shared: &Shared,
    rule: &str,
    limit: u32,
    reset_unix: i64,
    retry_after_s: u64,
    api_label: &str,
) -> Reply {
    error_reply(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit exceeded",
        Some(&format!(
            "Rate limit of {limit} requests per hour for {api_label} exceeded"
        )),
    )
    .header("x-ratelimit-limit", limit)
    .header("x-ratelimit-reset", reset_unix)
    .header("x-ratelimit-rule", rule)
    .header("retry-after", retry_after_s)
}

/// Every API_INT thread busy and its request queue full: "additional transactions will be rejected with a
/// 429 error". The rejection comes before the REST framework, so no JSON envelope, no rate-limit headers and
/// no `Retry-After` (the body is not documented; the harsher reading).
pub fn transactions_exhausted_reply() -> Reply {
    Reply {
        status: StatusCode::TOO_MANY_REQUESTS,
        headers: Vec::new(),
        body: Bytes::from_static(b"Too Many Requests"),
        content_type: "text/plain;charset=UTF-8",
        user: None,
        hold: Duration::ZERO,
    }
}

pub const HIBERNATING_PAGE: &str = "<!DOCTYPE html><html><head><title>Instance Hibernating</title></head><body>\
<h1>Your instance is hibernating</h1><p>This developer instance is hibernating because it has been inactive. \
Sign in to the developer portal to wake it up.</p></body></html>";

pub fn hibernating_reply() -> Reply {
    Reply {
        status: StatusCode::OK,
        headers: Vec::new(),
        body: Bytes::from_static(HIBERNATING_PAGE.as_bytes()),
        content_type: "text/html;charset=UTF-8",
        user: None,
        hold: Duration::ZERO,
    }
}

pub fn bad_request(message: &str, detail: Option<&str>) -> Reply {
    error_reply(StatusCode::BAD_REQUEST, message, detail)
}

pub fn not_found() -> Reply {
    error_reply(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

pub fn acl_denied(operation: &str) -> Reply {
    error_reply(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        Some(&format!("ACL Exception {operation} Failed due to security constraints")),
    )
}
