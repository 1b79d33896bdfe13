//! The checks `relay serve` puts in front of the shared router: the `Host` header (DNS rebinding), the read
//! token on the status and operator routes, and the request body read timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use relay_pipeline::http::BODY_READ_LIMIT;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

/// What the guard lets through.
#[derive(Clone)]
pub struct Guard {
    /// Host names (without port, lower case) a request may name; `None`: any (a `--public` server without
    /// `--allowed-host`, which is reachable under names it cannot know).
    pub allowed_hosts: Option<Arc<Vec<String>>>,
    /// The read token of `GET /v1/alerts/{id}`, `/v1/ops` and `/ops`.
    pub read_token: Arc<SecretString>,
    pub body_timeout: Duration,
}

/// The host names a loopback server answers to.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// The host name of a `Host` header value: lower case, without the port (`[::1]:8080` → `[::1]`).
fn host_name(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    if v.starts_with('[') {
        return v.split_inclusive(']').next().unwrap_or_default().to_string();
    }
    v.split(':').next().unwrap_or_default().to_string()
}

/// Whether a request to `path` (with `method`) needs the read token.
fn needs_read_token(method: &Method, path: &str) -> bool {
    let reads = *method == Method::GET || *method == Method::HEAD;
    reads && (path.starts_with("/v1/alerts/") || path == "/ops" || path.starts_with("/v1/ops"))
}

/// Whether `request` carries `Authorization: Bearer <token>` (compared in constant time).
fn has_token(request: &Request, token: &SecretString) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(token.expose_secret().as_bytes()).into()
}

pub async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if let Some(allowed) = &guard.allowed_hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(host_name)
            .or_else(|| request.uri().host().map(host_name));
        match host {
            Some(h) if allowed.contains(&h) => {}
            other => {
                return error(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "host {:?} is not served here (allowed: {}); add it with --allowed-host",
                        other.unwrap_or_default(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
    if needs_read_token(request.method(), request.uri().path()) && !has_token(&request, &guard.read_token) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "this route needs the read token: send `Authorization: Bearer <token>` (the token is in the \
             read-token file next to the database; see docs/local-mode.md)"
                .into(),
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let bytes = match tokio::time::timeout(guard.body_timeout, axum::body::to_bytes(body, BODY_READ_LIMIT)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {BODY_READ_LIMIT} bytes or was cut off"),
                );
            }
            Err(_) => {
                let mut resp = error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        guard.body_timeout.as_secs_f64()
                    ),
                );
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        };
        return next.run(Request::from_parts(parts, Body::from(bytes))).await;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_case() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:9"), "[::1]");
        assert_eq!(host_name("evil.example:8080"), "evil.example");
    }

    #[test]
    fn only_reads_of_status_and_operator_routes_need_the_token() {
        assert!(needs_read_token(&Method::GET, "/v1/alerts/a-1"));
        assert!(needs_read_token(&Method::HEAD, "/v1/alerts/a-1"));
        assert!(needs_read_token(&Method::GET, "/ops"));
        assert!(needs_read_token(&Method::GET, "/v1/ops/summary"));
        assert!(!needs_read_token(&Method::POST, "/v1/alerts"));
        assert!(!needs_read_token(&Method::GET, "/healthz"));
    }
}
