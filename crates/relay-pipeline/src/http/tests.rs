//! The router without a server (`tower::ServiceExt::oneshot`), over in-memory ports.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use relay_core::{Config, Router as Rules};
use relay_ports::memory::{MemoryLedger, MemoryNotifier, MemoryQueue, MemorySecrets};
use relay_ports::{Clock, SystemClock};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::ingest::{IngestSettings, SigningKeys};
use crate::signature::WebhookSecrets;
use crate::{Ports, defaults};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SAMPLE: &[u8] = include_bytes!("../../../../events/alerts/seed-usb-copy-847-files.json");

fn ports() -> Ports {
    let q = || Arc::new(MemoryQueue::new(Duration::from_secs(30)));
    let realtime = q();
    Ports {
        ledger: Arc::new(MemoryLedger::new()),
        // one queue for both lanes, as on a stack without a critical queue
        critical: realtime.clone(),
        realtime,
        batch: q(),
        dlq: q(),
        secrets: Arc::new(MemorySecrets::default()),
        notifier: Arc::new(MemoryNotifier::default()),
        clock: Arc::new(SystemClock),
    }
}

fn app_over(ports: &Ports) -> axum::Router {
    let ingest = Ingest::new(
        ports,
        Arc::new(Rules::new(Config::default_config(), None).unwrap()),
        SigningKeys::Fixed(WebhookSecrets::parse(&[SECRET]).unwrap()),
        IngestSettings {
            ledger_retention: defaults::LEDGER_RETENTION,
            ..IngestSettings::default()
        },
    );
    routes(Arc::new(ingest), "http")
}

fn signed(body: &[u8], id: &str) -> Request<Body> {
    let ts = SystemClock.now_ms() / 1000;
    let sig = WebhookSecrets::parse(&[SECRET]).unwrap().sign(id, ts, body);
    Request::post("/v1/alerts")
        .header("host", "relay.example.com:8080")
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(Body::from(body.to_vec()))
        .unwrap()
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"))
    };
    (parts.status, parts.headers, json)
}

#[tokio::test]
async fn an_accepted_alert_gets_202_its_status_link_and_then_its_status() {
    let app = app_over(&ports());
    let (status, headers, body) = call(&app, signed(SAMPLE, "msg_1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["alert_id"], "emon-20261120-7f3a9c");
    assert_eq!(body["duplicate"], false);
    assert_eq!(body["delivery"], "realtime");
    assert_eq!(
        body["status_url"],
        "http://relay.example.com:8080/v1/alerts/emon-20261120-7f3a9c"
    );

    let (status, _, again) = call(&app, signed(SAMPLE, "msg_1")).await;
    assert_eq!(
        (status, &again["duplicate"]),
        (StatusCode::ACCEPTED, &Value::Bool(true))
    );

    let get = |method: &str| {
        Request::builder()
            .method(method)
            .uri("/v1/alerts/emon-20261120-7f3a9c")
            .body(Body::empty())
            .unwrap()
    };
    let (status, headers, body) = call(&app, get("GET")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["state"], "QUEUED");
    assert_eq!(body["record_type"], "security_incident");
    let (status, _, _) = call(&app, get("HEAD")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_status_base_extension_wins_over_the_host_header() {
    let app = app_over(&ports());
    let mut req = signed(SAMPLE, "msg_2");
    req.extensions_mut().insert(StatusBase(
        "https://abc.execute-api.us-east-1.amazonaws.com/prod".into(),
    ));
    let (_, _, body) = call(&app, req).await;
    assert_eq!(
        body["status_url"],
        "https://abc.execute-api.us-east-1.amazonaws.com/prod/v1/alerts/emon-20261120-7f3a9c"
    );
}

#[tokio::test]
async fn every_refusal_is_json_with_the_right_status() {
    let app = app_over(&ports());
    // a bad signature
    let mut req = signed(SAMPLE, "msg_3");
    req.headers_mut()
        .insert("webhook-signature", "v1,AAAA".parse().unwrap());
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("signature"), "{body}");
    // not JSON
    let mut req = signed(SAMPLE, "msg_4");
    req.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].as_str().unwrap().contains("text/plain"), "{body}");
    // an invalid alert: every problem, with its path
    let (status, _, body) = call(&app, signed(br#"{"alert_id": "x"}"#, "msg_5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["problems"].as_array().unwrap().len() > 3, "{body}");
    // too large for the queue (the pipeline's own limit)
    let big = vec![b' '; crate::ingest::MAX_BODY_BYTES + 1];
    let (status, _, body) = call(&app, signed(&big, "msg_6")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    // far too large: refused unread
    let huge = vec![b' '; BODY_READ_LIMIT + 1];
    let resp = app.clone().oneshot(signed(&huge, "msg_7")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_named() {
    let app = app_over(&ports());
    let (status, headers, body) = call(&app, Request::get("/v1/alerts").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert!(body["error"].as_str().unwrap().contains("use POST"), "{body}");
    let (status, headers, _) = call(&app, Request::delete("/v1/alerts/a-1").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET,HEAD");
    let (status, _, body) = call(&app, Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("GET /v2/nothing"), "{body}");
    let (status, _, body) = call(&app, Request::get("/v1/alerts/unknown-id").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("unknown-id"), "{body}");
    // the push route: POST only, and off without a push secret
    let (status, headers, _) = call(
        &app,
        Request::get("/v1/servicenow/changes").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    let push = Request::post("/v1/servicenow/changes")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"table":"incident","sys_id":"0123456789abcdef0123456789abcdef"}"#,
        ))
        .unwrap();
    let (status, _, body) = call(&app, push).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("push endpoint is off"),
        "{body}"
    );
}

struct DownLedger;

#[async_trait::async_trait]
impl relay_ports::Ledger for DownLedger {
    async fn aggregate(
        &self,
        _: &relay_ports::LedgerEntry,
        _: &[(String, u64)],
        _: i64,
    ) -> Result<(), relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
    async fn accept(&self, _: &relay_ports::LedgerEntry) -> Result<relay_ports::Accept, relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
    async fn mark_queued(&self, _: &str, _: i64) -> Result<(), relay_ports::PortError> {
        Ok(())
    }
    async fn forget(&self, _: &str) -> Result<(), relay_ports::PortError> {
        Ok(())
    }
    async fn claim(&self, _: &str, _: i64, _: i64) -> Result<relay_ports::Claim, relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
    async fn extend(&self, _: &str, _: u64, _: i64, _: i64) -> Result<i64, relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
    async fn complete(
        &self,
        _: &str,
        _: u64,
        _: &relay_ports::RecordRef,
        _: i64,
    ) -> Result<(), relay_ports::PortError> {
        Ok(())
    }
    async fn retry_later(
        &self,
        _: &str,
        _: u64,
        _: &relay_ports::RetryLater,
        _: i64,
    ) -> Result<(), relay_ports::PortError> {
        Ok(())
    }
    async fn fail(&self, _: &str, _: u64, _: &str, _: &str, _: i64) -> Result<(), relay_ports::PortError> {
        Ok(())
    }
    async fn reopen(&self, _: &str, _: u64, _: i64, _: i64) -> Result<bool, relay_ports::PortError> {
        Ok(false)
    }
    async fn get(&self, _: &str) -> Result<Option<relay_ports::LedgerEntry>, relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
    async fn watched(&self, _: Option<&str>, _: u32) -> Result<Vec<relay_ports::LedgerEntry>, relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
    async fn observe(
        &self,
        _: &str,
        _: Option<&str>,
        _: &str,
        _: bool,
        _: i64,
    ) -> Result<bool, relay_ports::PortError> {
        Err(relay_ports::PortError::Unavailable("ledger down".into()))
    }
}

#[tokio::test]
async fn an_unavailable_ledger_is_a_503_with_retry_after() {
    let mut p = ports();
    p.ledger = Arc::new(DownLedger);
    let app = app_over(&p);
    let (status, headers, body) = call(&app, signed(SAMPLE, "msg_8")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "5");
    assert!(body["error"].as_str().unwrap().contains("NOT accepted"), "{body}");
    let (status, headers, _) = call(&app, Request::get("/v1/alerts/a").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_webhook_from_outside_the_sender_allow_list_is_refused_before_its_signature() {
    let ports = ports();
    let ingest = Ingest::new(
        &ports,
        Arc::new(Rules::new(Config::default_config(), None).unwrap()),
        SigningKeys::Fixed(WebhookSecrets::parse(&[SECRET]).unwrap()),
        IngestSettings {
            allowed_sources: crate::SourceAllowList::parse("203.0.113.0/24").unwrap(),
            ..IngestSettings::default()
        },
    );
    let app = routes(Arc::new(ingest), "http");
    let from = |ip: &str, mut req: Request<Body>| {
        req.extensions_mut().insert(SourceAddr(ip.parse().unwrap()));
        req
    };
    // a correctly signed alert from outside: 403 naming the address and the list, nothing queued
    let (status, _, body) = call(&app, from("198.51.100.7", signed(SAMPLE, "wh-out"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("198.51.100.7") && error.contains("203.0.113.0/24"),
        "{error}"
    );
    // no known source (an adapter that did not say): refused too
    let (status, _, body) = call(&app, signed(SAMPLE, "wh-unknown")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown address"), "{body}");
    assert_eq!(
        ports.realtime.depth().await.unwrap(),
        0,
        "nothing from outside is queued"
    );
    // from inside: the signature is checked as always
    let mut forged = signed(SAMPLE, "wh-forged");
    forged
        .headers_mut()
        .insert("webhook-signature", "v1,AAAA".parse().unwrap());
    let (status, _, _) = call(&app, from("203.0.113.9", forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(&app, from("203.0.113.9", signed(SAMPLE, "wh-in"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}
