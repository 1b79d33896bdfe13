//! The Lambda adapter in front of the pipeline's router: API Gateway v2 events in, the router's answers out.

use std::time::Duration;

use lambda_http::request::LambdaRequest;
use relay_ports::memory::{MemoryLedger, MemoryNotifier, MemoryQueue, MemorySecrets};
use relay_ports::{Clock, SystemClock};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DOMAIN: &str = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com";

fn event(name: &str, edit: impl FnOnce(&mut Value)) -> Request {
    let text = match name {
        "post" => include_str!("../../../../events/lambda/apigw-post-alert.json"),
        _ => include_str!("../../../../events/lambda/apigw-get-status.json"),
    };
    let mut event: Value = serde_json::from_str(text).expect("the sample event is JSON");
    edit(&mut event);
    serde_json::from_value::<LambdaRequest>(event)
        .expect("an API Gateway v2 event")
        .into()
}

/// The sample POST event carrying the seed's USB alert, signed now.
fn signed_post(edit: impl FnOnce(&mut Value)) -> Request {
    let body = include_str!("../../../../events/alerts/seed-usb-copy-847-files.json");
    let ts = SystemClock.now_ms() / 1000;
    let sig = relay_pipeline::WebhookSecrets::parse(&[SECRET])
        .unwrap()
        .sign("msg_1", ts, body.as_bytes());
    event("post", |e| {
        e["headers"]["webhook-id"] = "msg_1".into();
        e["headers"]["webhook-timestamp"] = ts.to_string().into();
        e["headers"]["webhook-signature"] = sig.into();
        e["body"] = body.into();
        edit(e);
    })
}

async fn ingest_over_memory() -> Arc<Ingest> {
    ingest_with_sources(None).await
}

/// The ingest function over in-memory ports, with `WEBHOOK_SOURCE_CIDRS` when given.
async fn ingest_with_sources(cidrs: Option<&str>) -> Arc<Ingest> {
    let settings = Settings::from_lookup(|k| {
        if k == "WEBHOOK_SOURCE_CIDRS" {
            return cidrs.map(str::to_string);
        }
        (!k.starts_with("CALLBACK_") && (k.ends_with("_URL") || k.ends_with("_ARN") || k.ends_with("_TABLE")))
            .then(|| format!("test-{k}"))
    })
    .unwrap();
    let q = || Arc::new(MemoryQueue::new(Duration::from_secs(30)));
    let realtime = q();
    let ports = Ports {
        ledger: Arc::new(MemoryLedger::new()),
        // one queue for both lanes, as on a stack without a critical queue
        critical: realtime.clone(),
        realtime,
        batch: q(),
        dlq: q(),
        secrets: Arc::new(MemorySecrets::new([(
            settings.webhook_secret_arn.clone(),
            json!({"secrets": [SECRET]}).to_string(),
        )])),
        notifier: Arc::new(MemoryNotifier::default()),
        clock: Arc::new(SystemClock),
    };
    Arc::new(ingest(&settings, &ports).await.unwrap())
}

async fn answer(ingest: &Arc<Ingest>, request: Request) -> (u16, Value) {
    let resp = app(ingest.clone()).oneshot(request).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_default_stage_answers_with_the_api_domain_in_the_status_link() {
    let ingest = ingest_over_memory().await;
    let (status, body) = answer(&ingest, signed_post(|_| {})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["status_url"],
        format!("https://{DOMAIN}/v1/alerts/emon-20261120-7f3a9c")
    );
    let (status, body) = answer(&ingest, event("get", |_| {})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "QUEUED");
}

#[tokio::test]
async fn a_named_stage_is_stripped_from_the_path_and_kept_in_the_link() {
    let ingest = ingest_over_memory().await;
    let (status, body) = answer(
        &ingest,
        signed_post(|e| {
            e["rawPath"] = "/prod/v1/alerts".into();
            e["requestContext"]["stage"] = "prod".into();
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["status_url"],
        format!("https://{DOMAIN}/prod/v1/alerts/emon-20261120-7f3a9c")
    );
    let (status, body) = answer(
        &ingest,
        event("get", |e| {
            e["rawPath"] = "/prod/v1/alerts/emon-20261120-7f3a9c".into();
            e["requestContext"]["stage"] = "prod".into();
        }),
    )
    .await;
    assert_eq!(
        (status, &body["alert_id"]),
        (200, &json!("emon-20261120-7f3a9c")),
        "{body}"
    );
}

#[tokio::test]
async fn without_a_domain_the_host_header_makes_the_link_and_refusals_are_the_routers() {
    let ingest = ingest_over_memory().await;
    let (status, body) = answer(
        &ingest,
        signed_post(|e| {
            e["requestContext"]["domainName"] = "".into();
            e["headers"]["host"] = "relay.example.com".into();
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["status_url"],
        "https://relay.example.com/v1/alerts/emon-20261120-7f3a9c"
    );
    // the sample as shipped carries a placeholder signature: refused by the router, as JSON
    let (status, body) = answer(&ingest, event("post", |_| {})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = answer(
        &ingest,
        event("get", |e| {
            e["rawPath"] = "/v1/other".into();
            e["pathParameters"] = json!({});
        }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_sender_allow_list_reads_the_source_ip_of_the_request_context() {
    // the sample event comes from 203.0.113.10
    let inside = ingest_with_sources(Some("203.0.113.0/24")).await;
    let (status, body) = answer(&inside, signed_post(|_| {})).await;
    assert_eq!(status, 202, "{body}");

    let outside = ingest_with_sources(Some("198.51.100.0/24, 2001:db8::/32")).await;
    let (status, body) = answer(&outside, signed_post(|_| {})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("203.0.113.10"), "{body}");
    let (status, body) = answer(
        &outside,
        signed_post(|e| e["requestContext"]["http"]["sourceIp"] = "198.51.100.20".into()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}
