//! The ingest function: API Gateway HTTP API (payload v2) → [`Ingest`].
//!
//! * `POST /v1/alerts` → [`Ingest::accept`] (signature, parse, validate, route, audit, de-duplicate, enqueue).
//! * `GET /v1/alerts/{alert_id}` → [`Ingest::status`].
//! * Anything else: 404 (unknown path) or 405 (known path, other method), as JSON.
//!
//! A stage prefix (`/prod/v1/alerts`) is accepted: routes match on the path's end.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::http::HeaderName;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use relay_pipeline::{CachedSecret, Ingest, IngestSettings, Metrics, Reply, SigningKeys, WebhookKeys, WebhookRequest};
use serde_json::json;

use crate::{Adapters, LambdaError, Settings, build_router, load_config};

const ALERTS: &str = "/v1/alerts";

/// The ingest handler: one per function instance, shared by every invocation.
pub struct IngestHandler {
    pub ingest: Ingest,
}

impl IngestHandler {
    /// The handler over `adapters`: the webhook secret is fetched on first use and cached.
    pub async fn new(settings: &Settings, adapters: &Adapters, metrics: Metrics) -> Result<Self, LambdaError> {
        let router = build_router(settings, load_config(settings)?, adapters.secrets.as_ref()).await?;
        let keys = WebhookKeys::new(CachedSecret::new(
            adapters.secrets.clone(),
            &settings.webhook_secret_arn,
            settings.secret_ttl,
            adapters.clock.clone(),
        ));
        Ok(IngestHandler {
            ingest: Ingest {
                router: Arc::new(router),
                keys: SigningKeys::Secret(keys),
                ledger: adapters.ledger.clone(),
                realtime: adapters.realtime.clone(),
                batch: adapters.batch.clone(),
                clock: adapters.clock.clone(),
                metrics,
                settings: IngestSettings {
                    ledger_retention: settings.ledger_retention,
                    ..IngestSettings::default()
                },
            },
        })
    }

    /// Answer one HTTP request. Never fails: every problem is an HTTP status with a JSON body.
    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path().trim_end_matches('/');
        let method = request.method();
        if path.ends_with(ALERTS) {
            if method != http::Method::POST {
                return Ok(not_allowed(method, "POST"));
            }
            // typed header names: a lookup by `&str` would parse the name on every request
            let header = |name: &HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
            let reply = self
                .ingest
                .accept(
                    WebhookRequest {
                        content_type: header(&http::header::CONTENT_TYPE),
                        webhook_id: header(&WEBHOOK_ID),
                        webhook_timestamp: header(&WEBHOOK_TIMESTAMP),
                        webhook_signature: header(&WEBHOOK_SIGNATURE),
                        body: request.body().as_ref(),
                    },
                    &status_base(&request),
                )
                .await;
            return Ok(response(reply));
        }
        if let Some(id) = alert_id(&request, path) {
            if method != http::Method::GET && method != http::Method::HEAD {
                return Ok(not_allowed(method, "GET"));
            }
            return Ok(response(self.ingest.status(&id).await));
        }
        Ok(json_response(
            404,
            json!({"error": format!("no route for {method} {path}")}).to_string(),
            None,
            None,
        ))
    }
}

static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The `{alert_id}` of a status request: the route's path parameter, else the path after `/v1/alerts/`.
fn alert_id(request: &Request, path: &str) -> Option<String> {
    let (_, rest) = path.rsplit_once("/v1/alerts/")?;
    if let Some(id) = request
        .path_parameters_ref()
        .and_then(|p| p.first("alert_id"))
        .filter(|s| !s.is_empty())
    {
        return Some(id.to_string());
    }
    (!rest.is_empty() && !rest.contains('/')).then(|| percent_decode(rest))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `https://<domain>[/<stage>]` from the API Gateway request context (the Host header otherwise).
fn status_base(request: &Request) -> String {
    if let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref()
        && let Some(domain) = ctx.domain_name.as_deref().filter(|d| !d.is_empty())
    {
        return match ctx.stage.as_deref() {
            Some(stage) if !stage.is_empty() && stage != "$default" => format!("https://{domain}/{stage}"),
            _ => format!("https://{domain}"),
        };
    }
    match request.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("https://{host}"),
        None => String::new(),
    }
}

fn not_allowed(method: &http::Method, allow: &'static str) -> Response<Body> {
    json_response(
        405,
        json!({"error": format!("method {method} not allowed; use {allow}")}).to_string(),
        None,
        Some(allow),
    )
}

fn response(reply: Reply) -> Response<Body> {
    json_response(reply.status, reply.body, reply.retry_after, None)
}

fn json_response(status: u16, text: String, retry_after: Option<u64>, allow: Option<&'static str>) -> Response<Body> {
    // typed header names and static values: nothing to parse or validate per response
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("the pipeline answers with valid statuses");
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(s) = retry_after {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
    }
    if let Some(a) = allow {
        headers.insert(http::header::ALLOW, http::HeaderValue::from_static(a));
    }
    response
}

/// Serve API Gateway requests until the runtime stops.
pub async fn run(handler: IngestHandler) -> Result<(), LambdaError> {
    let handler = Arc::new(handler);
    lambda_http::run(lambda_http::service_fn(move |request: Request| {
        let handler = handler.clone();
        async move { handler.handle(request).await }
    }))
    .await
    .map_err(|e| LambdaError::Runtime(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(edit: impl FnOnce(&mut serde_json::Value)) -> Request {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/lambda/apigw-post-alert.json"))
                .expect("the sample event is JSON");
        edit(&mut event);
        serde_json::from_value::<lambda_http::request::LambdaRequest>(event)
            .expect("an API Gateway v2 event")
            .into()
    }

    #[test]
    fn status_links_use_the_api_domain_and_a_named_stage() {
        let domain = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com";
        assert_eq!(
            status_base(&request(|_| {})),
            format!("https://{domain}"),
            "$default stage: no path segment"
        );
        let staged = request(|e| e["requestContext"]["stage"] = "prod".into());
        assert_eq!(status_base(&staged), format!("https://{domain}/prod"));
        let no_domain = request(|e| {
            e["requestContext"]["domainName"] = "".into();
            e["headers"]["host"] = "relay.example.com".into();
        });
        assert_eq!(
            status_base(&no_domain),
            "https://relay.example.com",
            "the Host header otherwise"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("emon-1"), "emon-1");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
