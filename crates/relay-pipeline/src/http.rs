//! The HTTP front end of both modes: one `axum::Router` with the webhook and status routes, served by
//! `lambda_http::run` in the ingest function and by `axum::serve` in `relay serve` (which adds its local
//! routes, `/healthz` and `/metrics`).
//!
//! * `POST /v1/alerts` → [`Ingest::accept`]: 202 with the alert id and its status link, or a clear 4xx/503;
//!   403 first when the request's [`SourceAddr`] (an extension the adapter inserts) is not on the sender
//!   allow-list.
//! * `GET /v1/alerts/{alert_id}` (and `HEAD`) → [`Ingest::status`].
//! * `POST /v1/servicenow/changes` → [`Ingest::push`]: a ServiceNow business rule's signed "this record
//!   changed" (404 while no push secret is set).
//! * A known path with another method: 405 with `Allow`; anything else: 404. Both as JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::SourceAddr;
use crate::ingest::{Ingest, Reply, WebhookRequest};

/// The public base URL of the service (`https://<domain>[/<stage>]`), for the status link of a 202. The
/// deployment adapter inserts it as a request extension when it knows it (API Gateway's request context);
/// otherwise it is made from the `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBase(pub String);

/// The largest body that reaches the pipeline, which answers 413 itself above its own limit
/// ([`crate::ingest::MAX_BODY_BYTES`]); larger bodies are refused unread.
pub const BODY_READ_LIMIT: usize = 1024 * 1024;

pub static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

#[derive(Clone)]
struct App {
    ingest: Arc<Ingest>,
    /// The scheme of status links made from the Host header (`https` behind API Gateway).
    scheme: &'static str,
}

/// The webhook and status routes over `ingest`. `scheme` is used for status links made from the `Host`
/// header when no [`StatusBase`] extension is present.
pub fn routes(ingest: Arc<Ingest>, scheme: &'static str) -> Router {
    Router::new()
        .route("/v1/alerts", post(post_alert))
        .route("/v1/alerts/{alert_id}", get(get_alert))
        .route("/v1/servicenow/changes", post(post_change))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_READ_LIMIT))
        .with_state(App { ingest, scheme })
}

/// A [`Reply`] as an HTTP response: its status, its JSON body, and `Retry-After` on a 503.
pub fn response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, reply.body, reply.retry_after)
}

fn json_response(status: StatusCode, body: String, retry_after: Option<u64>) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    resp
}

async fn post_alert(
    State(app): State<App>,
    base: Option<axum::Extension<StatusBase>>,
    source: Option<axum::Extension<SourceAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = app
        .ingest
        .refuse_source(source.map(|axum::Extension(SourceAddr(ip))| ip))
    {
        return response(refused);
    }
    let h = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let base = match base {
        Some(axum::Extension(StatusBase(b))) => b,
        None => h(&header::HOST)
            .map(|host| format!("{}://{host}", app.scheme))
            .unwrap_or_default(),
    };
    let req = WebhookRequest {
        content_type: h(&header::CONTENT_TYPE),
        webhook_id: h(&WEBHOOK_ID),
        webhook_timestamp: h(&WEBHOOK_TIMESTAMP),
        webhook_signature: h(&WEBHOOK_SIGNATURE),
        body: &body,
    };
    response(app.ingest.accept(req, &base).await)
}

async fn post_change(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    response(
        app.ingest
            .push(WebhookRequest {
                content_type: h(&header::CONTENT_TYPE),
                webhook_id: h(&WEBHOOK_ID),
                webhook_timestamp: h(&WEBHOOK_TIMESTAMP),
                webhook_signature: h(&WEBHOOK_SIGNATURE),
                body: &body,
            })
            .await,
    )
}

async fn get_alert(State(app): State<App>, Path(alert_id): Path<String>) -> Response {
    response(app.ingest.status(&alert_id).await)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path().trim_end_matches('/');
    let allow = if path == "/v1/alerts" || path == "/v1/servicenow/changes" {
        "POST"
    } else {
        "GET,HEAD"
    };
    let mut resp = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": format!("method {method} not allowed on {}; use {allow}", uri.path())}).to_string(),
        None,
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn not_found(method: Method, uri: Uri) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"error": format!(
            "no route for {method} {}; the routes are POST /v1/alerts, GET /v1/alerts/{{alert_id}} and \
             POST /v1/servicenow/changes",
            uri.path()
        )})
        .to_string(),
        None,
    )
}

#[cfg(test)]
mod tests;
