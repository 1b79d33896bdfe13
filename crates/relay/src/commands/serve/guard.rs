//! The checks `relay serve` puts in front of the shared router: the `Host` header (DNS rebinding), the read
//! token on the status and operator routes (and on `/metrics` when the server is `--public`), and the
//! request body read timeout.
//!
//! The read token is accepted as `Authorization: Bearer <token>` (scripts, `relay status`) or as the
//! password of HTTP Basic authentication (any user name): a browser asks for it on `/ops` and sends it in
//! the `Authorization` header of every later request, so the token is never part of a URL (browser
//! history, proxy and access logs, `Referer`) and no cookie or session exists that another site could
//! ride (CSRF) or that outlives the token.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
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
    /// Whether `/metrics` needs the read token too (a `--public` server: the metrics name rules, record
    /// types and failure counts).
    pub metrics_need_token: bool,
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
fn needs_read_token(method: &Method, path: &str, metrics_need_token: bool) -> bool {
    let reads = *method == Method::GET || *method == Method::HEAD;
    reads
        && (path.starts_with("/v1/alerts/")
            || path == "/ops"
            || path.starts_with("/v1/ops")
            || (metrics_need_token && path == "/metrics"))
}

/// The token an `Authorization` header carries: `Bearer <token>`, or `Basic base64(user:token)`.
fn given_token(authorization: &str) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_string());
    }
    None
}

/// Whether `request` carries the read token (compared in constant time).
fn has_token(request: &Request, token: &SecretString) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(given_token)
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.expose_secret().as_bytes()).into()
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
    let path = request.uri().path();
    if needs_read_token(request.method(), path, guard.metrics_need_token) && !has_token(&request, &guard.read_token) {
        // The page asks a browser for the token (Basic, any user name); the API routes name the header.
        let challenge = if path == "/ops" {
            "Basic realm=\"relay operator page\", charset=\"UTF-8\""
        } else {
            "Bearer"
        };
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "this route needs the read token: send `Authorization: Bearer <token>` (or, in a browser, the \
             token as the password of any user name); the token is in the read-token file next to the \
             database, see docs/local-mode.md"
                .into(),
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
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
        assert!(needs_read_token(&Method::GET, "/v1/alerts/a-1", false));
        assert!(needs_read_token(&Method::HEAD, "/v1/alerts/a-1", false));
        assert!(needs_read_token(&Method::GET, "/ops", false));
        assert!(needs_read_token(&Method::GET, "/v1/ops/summary", false));
        assert!(!needs_read_token(&Method::POST, "/v1/alerts", false));
        assert!(!needs_read_token(&Method::GET, "/healthz", true));
        assert!(!needs_read_token(&Method::GET, "/metrics", false));
        assert!(needs_read_token(&Method::GET, "/metrics", true));
    }

    #[test]
    fn the_token_comes_as_bearer_or_as_the_basic_password() {
        assert_eq!(given_token("Bearer abc ").as_deref(), Some("abc"));
        // base64("ops:s3cret:with-colon")
        assert_eq!(
            given_token("Basic b3BzOnMzY3JldDp3aXRoLWNvbG9u").as_deref(),
            Some("s3cret:with-colon")
        );
        assert_eq!(given_token("Basic not-base64!"), None);
        assert_eq!(given_token("Digest abc"), None);
    }
}
